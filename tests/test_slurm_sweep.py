"""ablate sweeps on the local SLURM cluster (scripts/slurm/up.sh): one job per cell through hydra/launcher=slurm.

- a 2x2 sweep ends with four complete rows; the same command again submits no job at all (sacct);
- a two-device DDP cell runs as two SLURM tasks (tasks_per_node = trainer.devices) and trains like one process;
- a real cell whose job hits its 1-minute time limit checkpoints, is requeued, resumes and completes.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import SMALL_DATA, ablate_cmd
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

QUICK = ["resolution=224", "logger=none", "scale.stage1.max_steps=3", "scale.stage2.max_steps=3",
         "scale.stage1.batch_size=4", "scale.stage1.micro_batch_size=4", "scale.stage2.batch_size=4",
         "scale.stage2.micro_batch_size=4", "eval.max_questions=4", "eval.benchmarks=[synth_qa]", *SMALL_DATA]


def _slurm(cluster, root: Path, *overrides: str) -> list[str]:
    return [*cluster.hydra_overrides("slurm"), f"paths.root={root}", f"paths.data_root={root / 'data'}", *overrides]


def _jobs_since(start: str) -> list[str]:
    """SLURM job ids (array tasks included) submitted since `start`, from accounting."""
    out = subprocess.run(["sacct", "-n", "-X", "-a", "-P", "-S", start, "-o", "JobID,Submit"],
                         capture_output=True, text=True, timeout=30, check=True)
    return [line.split("|")[0] for line in out.stdout.splitlines()
            if line.strip() and line.split("|")[1] >= start]


def _rows(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "cells").glob("*/result.json"))]


@pytest.mark.slurm
def test_slurm_sweep_completes_and_rerun_submits_nothing(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    args = ablate_cmd("-m", "freeze=train_lm,train_both", "seed=0,1", *QUICK, *_slurm(slurm_cluster, root))
    start = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = _rows(root)
    assert len(rows) == 4 and all(r["status"] == "complete" for r in rows), [r.get("error") for r in rows]
    assert sorted((r["axes"]["freeze"], r["axes"]["seed"]) for r in rows) == \
        [("train_both", 0), ("train_both", 1), ("train_lm", 0), ("train_lm", 1)]
    assert len(_jobs_since(start)) == 4                          # one SLURM job per cell
    assert len(list((root / "stage1").iterdir())) == 2            # one stage 1 per seed, shared by two jobs
    assert sorted(r["compute"]["stage1_shared"] for r in rows) == [False, False, True, True]

    time.sleep(1.1)   # sacct's times have one-second resolution
    again = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-4000:]
    assert "4 of 4 cells are complete and not launched; launching 0" in out.stdout + out.stderr
    assert _jobs_since(again) == [], "re-running a finished sweep submitted SLURM jobs"
    assert [r["created"] for r in _rows(root)] == [r["created"] for r in rows]
    print(f"re-running the finished 2x2 SLURM sweep: {wall:.1f} s, 0 jobs submitted")


@pytest.mark.slurm
def test_ddp_cell_runs_as_two_slurm_tasks_like_one_process(slurm_cluster, tmp_path):
    """tasks_per_node = trainer.devices = 2: SLURM starts both ranks; they agree through rank 0's files."""
    ddp_cell = [*QUICK, "lm.arch.resid_pdrop=0.0", "scale.stage1.micro_batch_size=1", "scale.stage2.micro_batch_size=1"]
    local = tmp_path / "local"
    out = subprocess.run(ablate_cmd(*ddp_cell, f"paths.root={local}", f"paths.data_root={tmp_path / 'data'}"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "runs"
    launcher = [o for o in _slurm(slurm_cluster, root) if not o.startswith("hydra.launcher.tasks_per_node=")]
    out = subprocess.run(ablate_cmd("-m", "seed=0", *ddp_cell, "trainer.devices=2", "trainer.accelerator=cpu",
                                    "trainer.strategy=ddp", *launcher, f"paths.data_root={tmp_path / 'data'}"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = _rows(root)
    assert row["status"] == "complete"
    logs = "\n".join(p.read_text() for p in (root / "slurm").rglob("*_log.out"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs and len(list((root / "slurm").rglob("*_1_log.out"))) == 1
    cdir = root / "cells" / row["cell_id"]
    job = next((root / "slurm").rglob("*_submitted.pkl")).name.split("_")[0]
    assert sorted(p.name for p in (cdir / ".ranks").iterdir()) == [f"slurm-{job}-0.stage1.json",
                                                                  f"slurm-{job}-0.stage2.json"]
    a = torch.load(local / "cells" / row["cell_id"] / "stage2" / "weights.pt")
    b = torch.load(cdir / "stage2" / "weights.pt")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def _time_limited_run(cluster, root: Path, steps: int) -> tuple[subprocess.CompletedProcess, str]:
    args = ablate_cmd("-m", "seed=0", *QUICK, f"scale.stage2.max_steps={steps}", "trainer.checkpoint_every_n_steps=10",
                      *_slurm(cluster, root), "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
                      "hydra.launcher.max_num_timeout=10")
    out = subprocess.run(args, capture_output=True, text=True, timeout=1500)
    return out, "\n".join(p.read_text() for p in sorted((root / "slurm").rglob("*_log.out")))


@pytest.mark.slurm
@pytest.mark.slow
def test_cell_past_its_time_limit_is_requeued_and_completes(slurm_cluster, tmp_path):
    # With timeout_min=1 SLURM warns (USR2) about 55 s into a run, which leaves well under a minute of training
    # per run: the cell checkpoints on the warning, submitit requeues it, the next run resumes
    # (signal_delay_s=5, as the notes advise). This machine's speed varies several-fold with other work, so a
    # cell that finished inside one run is run again with as many steps as ~150 s of training at the speed
    # that run measured (about two requeues).
    steps = 60
    for attempt in range(3):
        root = tmp_path / f"attempt{attempt}"
        t0 = time.perf_counter()
        out, logs = _time_limited_run(slurm_cluster, root, steps)
        assert out.returncode == 0, (out.stderr[-2000:], logs[-3000:])
        if "Requeued job" in logs:
            break
        (done,) = _rows(root)
        per_step = done["compute"]["wall_s"]["stage2"] / steps
        steps = int(min(5000, max(2 * steps, 150 / max(per_step, 1e-3))))
    else:
        pytest.fail(f"a {steps}-step cell finished inside one 1-minute run three times: the limit was never hit")
    (row,) = _rows(root)
    assert row["status"] == "complete"
    requeues = len(set(re.findall(r"Requeued job \d+ \((\d+) remaining timeouts\)", logs)))
    # Every warning was caught by ablate, which checkpointed before handing the job to submitit's requeue.
    saves = re.findall(r"\[ablate.train.preempt\]\[WARNING\] - saved .* at step (\d+); handing the signal", logs)
    # a warning in a stage's last steps is handed on once the finished stage is written (no step checkpoint)
    finished = re.findall(r"\[ablate.train.preempt\]\[WARNING\] - stage \w+ finished and saved; handing the signal",
                          logs)
    # a warning during the final evaluation requeues at once (the finished benchmarks are cached)
    in_eval = re.findall(r"\[ablate.train.preempt\]\[WARNING\] - signal \d+ during evaluation: requeueing now", logs)
    assert requeues >= 1 and len(saves) + len(finished) + len(in_eval) == requeues and saves, logs[-3000:]
    assert row["compute"]["resumed_from_step"] == int(saves[-1])  # the last run started where the last save was
    s2 = json.loads((root / "cells" / row["cell_id"] / "stage2" / "result.json").read_text())
    assert s2["steps"] == steps
    print(f"time-limited cell: {steps} steps, {requeues} requeue(s), complete after {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
