"""Test helper that writes realistic result rows and per-question files, per the schema, into a directory.

Scores are chosen so their means are known exactly (e.g. 0/1 scores with a fixed number of ones), which
lets tests compare the table, the figure data and the CIs against numbers computed by hand.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np

DEFAULT_AXES = {"encoder": "siglip", "resolution": 384, "lm": "phi2", "tuning": "full",
                "freeze": "train_both", "data": "synthetic", "scale": "tiny", "seed": 0}


def cell_id_of(axes: dict) -> str:
    return hashlib.sha1(json.dumps(axes, sort_keys=True).encode()).hexdigest()[:12]


def binary_scores(n: int, accuracy: float, seed: int = 0) -> np.ndarray:
    """n scores of 0/1 with exactly round(n * accuracy) ones, in a seeded random order."""
    k = int(round(n * accuracy))
    s = np.zeros(n)
    s[:k] = 1.0
    np.random.default_rng(seed).shuffle(s)
    return s


def write_row(root, axes: dict | None = None, metrics: dict | None = None, per_question: dict | None = None,
              status: str = "complete", error: str | None = None, sweep: str | None = None,
              compute: dict | None = None, trainable: int = 1000, schema_version=1,
              created: str = "2026-01-01T00:00:00Z", cell_id: str | None = None) -> Path:
    """Write `<root>/cells/<id>/result.json` (+ `eval/<bench>.jsonl` per benchmark in per_question).

    per_question maps a benchmark to its scores: an array (question ids q0, q1, ...) or a {qid: score} dict.
    """
    axes = {**DEFAULT_AXES, **(axes or {})}
    cid = cell_id or cell_id_of(axes)
    cell = Path(root) / "cells" / cid
    (cell / "eval").mkdir(parents=True, exist_ok=True)
    pq_paths = {}
    for bench, scores in (per_question or {}).items():
        items = scores.items() if isinstance(scores, dict) else ((f"q{i}", s) for i, s in enumerate(scores))
        rel = f"eval/{bench}.jsonl"
        with open(cell / rel, "w") as f:
            for qid, s in items:
                f.write(json.dumps({"question_id": qid, "score": float(s), "prediction": "yes"}) + "\n")
        pq_paths[bench] = rel
    row = {
        "schema_version": schema_version, "cell_id": cid, "status": status, "error": error, "sweep": sweep,
        "axes": axes, "metrics": {} if status != "complete" else dict(metrics or {}),
        "per_question": pq_paths,
        "params": {"total": 10 * trainable, "stage1": {"trainable": trainable // 10, "frozen": 9 * trainable},
                   "stage2": {"trainable": trainable, "frozen": 9 * trainable}},
        "compute": {"wall_s": {"stage1": 10.0, "stage2": 30.0, "eval": 5.0, "total": 45.0},
                    "stage1_shared": True, "device": "cpu", "gpu_hours": 0.0, "tokens_seen": 123456,
                    "train_flops": 1.0e12, "peak_mem_mb": 800.0, **(compute or {})},
        "config": {"seed": axes["seed"]}, "git_sha": "abc123", "ablate_version": "0.1.0", "created": created,
    }
    (cell / "result.json").write_text(json.dumps(row, indent=2))
    return cell / "result.json"


def write_arms(root, axis: str, accuracies: dict, seeds=(0, 1, 2), n_questions: int = 400,
               base: dict | None = None, benchmarks=("synth_vqa",), sweep: str | None = None,
               compute_of=None) -> dict:
    """One cell per (arm value, seed): 0/1 scores whose mean is `accuracies[value][seed index]`.

    accuracies[value] is a float (same for every seed) or a list (one per seed); every benchmark gets the
    same accuracy but a different question order. Returns {(value, seed, bench): scores} for hand checks.
    compute_of(value, seed) -> dict overrides the compute block of that cell.
    """
    out = {}
    for value, acc in accuracies.items():
        accs = acc if isinstance(acc, (list, tuple)) else [acc] * len(seeds)
        for i, seed in enumerate(seeds):
            axes = {**(base or {}), axis: value, "seed": seed}
            metrics, pq = {}, {}
            for j, bench in enumerate(benchmarks):
                s = binary_scores(n_questions, accs[i], seed=1000 * i + 17 * j + zlib.crc32(str(value).encode()) % 997)
                out[(value, seed, bench)] = s
                metrics[f"eval/{bench}/accuracy"] = float(s.mean())
                pq[bench] = s
            metrics["train/stage2/loss"] = 1.0 - accs[i]
            write_row(root, axes, metrics, pq, sweep=sweep,
                      compute=compute_of(value, seed) if compute_of else None)
    return out
