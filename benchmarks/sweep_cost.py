"""Sweep cost: re-running a finished sweep, and what sharing stage 1 saves (prints numbers, asserts nothing).

Measured in one run, on the tiny four-freeze-pattern sweep (one encoder x one LM x four freeze patterns):
  shared       `-m +sweep=fig5_freeze_tiny seed=0`: stage 1 trained once, loaded by the other three cells;
  independent  the same four cells, each with its own results root (paths.root=.../${freeze.name}), so each
               trains its own stage 1 -- same process, same launcher, only the sharing differs;
  re-run       the shared command again on its finished root: nothing should train.
Each sweep runs in one process (Hydra's local launcher), after the synthetic data is generated and one
untimed warm-up cell has run; the two conditions alternate (A B B A) and each is the mean of its two runs.

    python benchmarks/sweep_cost.py [--quick] [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELL = ["resolution=224", "logger=none", "scale.stage1.batch_size=8", "scale.stage1.micro_batch_size=8",
        "scale.stage2.batch_size=8", "scale.stage2.micro_batch_size=8", "eval.max_questions=16",
        "eval.benchmarks=[synth_qa]", "data.num_train=128", "data.num_eval=16"]


def _ablate(*args: str) -> tuple[float, str]:
    # Passive OpenMP waiting: spinning threads on a loaded 2-core machine made steps several times slower
    # (see benchmarks/__main__.py), which swamped what this benchmark measures.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"ablate {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return wall, out.stdout + out.stderr


def _rows(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in root.rglob("cells/*/result.json")]


def _generate_data(data_root: Path, steps: list[str]) -> None:
    """The synthetic set, made once before timing (both sweeps read it)."""
    from hydra import compose, initialize_config_dir

    from ablate.data import resolve_data

    with initialize_config_dir(config_dir=str(REPO / "src" / "ablate" / "conf"), version_base="1.3"):
        resolve_data(compose("config", overrides=[*CELL, *steps, f"paths.data_root={data_root}"]))


def run(quick: bool = False, root: Path | None = None) -> dict:
    root = Path(root or tempfile.mkdtemp(prefix="ablate-sweep-cost-"))
    n1, n2 = (10, 10) if quick else (40, 20)
    steps = [f"scale.stage1.max_steps={n1}", f"scale.stage2.max_steps={n2}"]
    data = root / "data"
    _generate_data(data, steps)
    common = ["-m", "+sweep=fig5_freeze_tiny", "seed=0", *CELL, *steps, f"paths.data_root={data}"]
    # One untimed cell first, so the first timed sweep does not also pay for cold caches.
    _ablate(*CELL, "scale.stage1.max_steps=2", "scale.stage2.max_steps=2", f"paths.data_root={data}",
            f"paths.root={root / 'warmup'}")

    # Interleaved A B B A, each in a fresh root: the machine's speed drifts (other work), and a drift then
    # weighs on both conditions alike. ${freeze.name} resolves per cell: four roots, four stage-1 artifacts.
    roots = {"shared": lambda i: f"paths.root={root / f'shared{i}'}",
             "independent": lambda i: f"paths.root={root / f'independent{i}'}/${{freeze.name}}"}
    walls: dict[str, list[float]] = {"shared": [], "independent": []}
    for i, kind in enumerate(("shared", "independent", "independent", "shared")):
        walls[kind].append(_ablate(*common, roots[kind](i))[0])
    shared_s, indep_s = sum(walls["shared"]) / 2, sum(walls["independent"]) / 2
    rerun_s, log = _ablate(*common, roots["shared"](0))

    shared, indep = _rows(root / "shared0"), _rows(root / "independent1")
    s1 = {name: sum(r["compute"]["wall_s"]["stage1"] for r in rows) for name, rows in
          (("shared", shared), ("independent", indep))}
    launched = "launching 0" not in log
    res = {
        "name": "sweep_cost", "quick": quick, "cells": len(shared), "steps": {"stage1": n1, "stage2": n2},
        "rerun_s": round(rerun_s, 2), "rerun_trained_anything": launched,
        "shared_s": round(shared_s, 1), "independent_s": round(indep_s, 1),
        "walls_s": {k: [round(w, 1) for w in v] for k, v in walls.items()},
        "ratio": round(shared_s / indep_s, 3),
        "stage1_trained": {"shared": sum(not r["compute"]["stage1_shared"] for r in shared),
                           "independent": sum(not r["compute"]["stage1_shared"] for r in indep)},
        "stage1_train_s": {k: round(v, 1) for k, v in s1.items()},
        "load": os.getloadavg()[0],
    }
    print(f"re-run of the finished {len(shared)}-cell sweep: {rerun_s:.1f} s "
          f"({'cells were launched!' if launched else 'no cell launched, nothing trained'}; target < 10 s)")
    print(f"four freeze patterns, shared stage 1: {shared_s:.1f} s {res['walls_s']['shared']} (stage 1 trained "
          f"{res['stage1_trained']['shared']}x, {s1['shared']:.1f} s)")
    print(f"same cells, independent stage 1:    {indep_s:.1f} s {res['walls_s']['independent']} (stage 1 trained "
          f"{res['stage1_trained']['independent']}x, {s1['independent']:.1f} s)")
    print(f"shared / independent wall time: {res['ratio']:.3f}  (1-min load average {res['load']:.1f}; "
          f"{n1} stage-1 and {n2} stage-2 steps per cell)")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (10 + 10 per cell)")
    ap.add_argument("--root", type=Path, help="results root (default: a fresh temporary folder)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(run(a.quick, a.root)))
