"""A tiny cell trained by two CPU processes (Lightning DDP over gloo) ends where one process ends.

Same global batch (4) on both: one process accumulates 4 micro-batches of 1, two ranks 2 each, and the
ResumableSampler deals the global order out across ranks, so every optimizer step sees the same 4 samples.
Micro-batches of one sample make the two gradients the same sum (only the float summation order differs);
dropout is off because each rank would draw its own masks. Tolerance: weights within rtol 1e-4, atol 1e-5.
Rank 0 alone evaluates and writes the row; the other rank follows rank 0's stage-1 decision without
touching the stage-1 lock (taking it would deadlock: rank 0 holds it while waiting for rank 1 to join).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import SMALL_DATA, ablate_cmd

CELL = ["resolution=224", "logger=none", "lm=phi2", "encoder=siglip", "lm.arch.resid_pdrop=0.0",
        "scale.stage1.max_steps=3", "scale.stage1.batch_size=4", "scale.stage1.micro_batch_size=1",
        "scale.stage2.max_steps=3", "scale.stage2.batch_size=4", "scale.stage2.micro_batch_size=1",
        "eval.max_questions=4", "eval.benchmarks=[synth_qa]", *SMALL_DATA]
DDP = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp"]
RTOL, ATOL = 1e-4, 1e-5


def _run(root: Path, data_root: Path, *extra: str) -> tuple[dict, str]:
    # A deadlock would hang here: the timeout turns it into a failure.
    out = subprocess.run(ablate_cmd(*CELL, f"paths.root={root}", f"paths.data_root={data_root}", *extra),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(p.read_text()) for p in (root / "cells").glob("*/result.json")]
    return row, out.stdout + out.stderr


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu")


def _close(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL), (k, (a[k] - b[k]).abs().max().item())
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_cpu_ranks_train_like_one_process(tmp_path, data_root):
    one, _ = _run(tmp_path / "one", data_root)
    two, log = _run(tmp_path / "two", data_root, *DDP)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log                      # really two processes
    assert two["cell_id"] == one["cell_id"] and two["status"] == "complete"
    c1, c2 = (tmp_path / n / "cells" / one["cell_id"] for n in ("one", "two"))
    (s1a,), (s1b,) = (list((tmp_path / n / "stage1").iterdir()) for n in ("one", "two"))
    diff1 = _close(_weights(s1a / "weights.pt"), _weights(s1b / "weights.pt"))
    diff2 = _close(_weights(c1 / "stage2" / "weights.pt"), _weights(c2 / "stage2" / "weights.pt"))
    print(f"DDP vs one process: max |weight difference| stage 1 {diff1:.2e}, stage 2 {diff2:.2e}")
    # the row counts what every rank trained on, not rank 0's share
    assert two["compute"]["tokens_seen"] == one["compute"]["tokens_seen"] > 0
    assert two["compute"]["train_flops"] == pytest.approx(one["compute"]["train_flops"], rel=1e-9)
    evals = {k: v for k, v in one["metrics"].items() if k.startswith("eval/")}
    assert evals and {k: two["metrics"][k] for k in evals} == evals

    # Rank 0 alone evaluated and wrote: one evaluation, one "complete" line, one set of per-question lines.
    assert log.count("eval synth_qa: 4 questions") == 1 and log.count("complete: train/stage1/loss") == 1
    assert len((c2 / "eval" / "synth_qa.jsonl").read_text().splitlines()) == 4
    # Both ranks read rank 0's decisions (stage 1 trained here, stage 2 not done yet) from its files.
    decisions = sorted(p.name.split(".", 1)[1] for p in (c2 / ".ranks").iterdir())
    assert decisions == ["stage1.json", "stage2.json"]

    # Again with the stage-1 artifact present: rank 0 loads it, rank 1 follows, same stage 2.
    again, _ = _run(tmp_path / "two", data_root, *DDP, "run.force=true")
    assert again["compute"]["stage1_shared"] is True and again["status"] == "complete"
    _close(_weights(c1 / "stage2" / "weights.pt"), _weights(c2 / "stage2" / "weights.pt"))
