"""Evaluation results are cached per (weights, benchmark, questions, prompt, decoding): re-use, never stale."""
from __future__ import annotations

import pytest
from conftest import FAST, SMALL_DATA, compose

from ablate import cell as C
from ablate.eval import generate as G

REAL_GENERATE = G.generate_answers


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ablate.run import run_cell

    root = tmp_path_factory.mktemp("evalcache")
    cfg = compose([*FAST, *SMALL_DATA, "eval.max_questions=5", "eval.benchmarks=[synth_qa,synth_pope]"], root=root)
    row = run_cell(cfg)
    assert row["status"] == "complete"
    return cfg, row


def _evaluate(cfg, monkeypatch, allow_generate: bool):
    from ablate.data import resolve_data
    from ablate.data.tokenizer import build_tokenizer
    from ablate.eval.run import evaluate_cell
    from ablate.models.build import build_vlm

    calls = []

    def spy(*a, **k):
        calls.append(1)
        if not allow_generate:
            raise AssertionError("generation ran although the cache should have answered")
        return REAL_GENERATE(*a, **k)

    monkeypatch.setattr(G, "generate_answers", spy)
    tok = build_tokenizer(cfg)
    vlm = build_vlm(cfg, tok)
    return evaluate_cell(vlm, tok, cfg, C.cell_dir(cfg), resolve_data(cfg)), calls


def test_cached_then_invalidated(trained, monkeypatch):
    cfg, row = trained
    (metrics, _), calls = _evaluate(cfg, monkeypatch, allow_generate=False)
    assert not calls
    assert metrics == {k: v for k, v in row["metrics"].items() if k.startswith("eval/")}
    # A changed decoding setting misses the cache: it is never served a stale result.
    cfg.eval.max_new_tokens = int(cfg.eval.max_new_tokens) + 1
    (_, _), calls = _evaluate(cfg, monkeypatch, allow_generate=True)
    assert len(calls) == 2          # both benchmarks re-generated
