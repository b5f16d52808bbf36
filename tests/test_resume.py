"""A cell interrupted in the middle of stage 2 and run again ends bit for bit where an uninterrupted run ends.

Killed: SIGKILL (no handler runs, nothing is flushed) as soon as its first stage-2 checkpoint exists; the
re-run resumes from that checkpoint with the same data order and RNG state.
Signalled: SLURM's USR2 warning under a submitit-like handler; ablate checkpoints at the next optimizer step,
hands the signal on (the handler exits, as submitit's does after requeueing), and the re-run resumes there.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SMALL_DATA, ablate_cmd

# phi2 keeps dropout (resid_pdrop 0.1) on, so a wrong RNG state after resuming changes the numbers;
# micro batch 2 of global 4 makes every optimizer step two accumulated forwards.
CELL = ["resolution=224", "logger=none", "lm=phi2", "encoder=siglip",
        "scale.stage1.max_steps=2", "scale.stage1.batch_size=4", "scale.stage1.micro_batch_size=4",
        "scale.stage2.max_steps=8", "scale.stage2.batch_size=4", "scale.stage2.micro_batch_size=2",
        "trainer.checkpoint_every_n_steps=2", "eval.max_questions=6", "eval.benchmarks=[synth_qa,synth_pope]",
        *SMALL_DATA]


def _run(root: Path, data_root: Path) -> dict:
    out = subprocess.run(ablate_cmd(*CELL, f"paths.root={root}", f"paths.data_root={data_root}"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(p.read_text()) for p in (root / "cells").glob("*/result.json")]
    return row


def _kill_once_checkpointed(root: Path, data_root: Path, timeout: float = 900) -> int:
    """Start the cell, SIGKILL it once stage 2 has a checkpoint; return the checkpoint's step."""
    proc = subprocess.Popen(ablate_cmd(*CELL, f"paths.root={root}", f"paths.data_root={data_root}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            ckpts = list((root / "cells").glob("*/stage2/ckpt/last.ckpt"))
            if ckpts:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return int(torch.load(ckpts[0], map_location="cpu", weights_only=False)["global_step"])
            assert proc.poll() is None, f"the cell exited ({proc.returncode}) before its first stage-2 checkpoint"
            assert time.monotonic() < deadline, "no stage-2 checkpoint in time"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> tuple[dict, Path]:
    """The cell run once without interruption: its row and its cell folder."""
    root = tmp_path_factory.mktemp("uninterrupted")
    row = _run(root, data_root)
    return row, root / "cells" / row["cell_id"]


def _same_result(resumed: dict, cdir: Path, reference) -> None:
    row, ref_dir = reference
    assert resumed["status"] == "complete" and resumed["cell_id"] == row["cell_id"]
    # Every metric (training losses and every benchmark score) equal, and the trained weights bit for bit.
    assert resumed["metrics"] == row["metrics"]
    a, b = torch.load(ref_dir / "stage2" / "weights.pt"), torch.load(cdir / "stage2" / "weights.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # what the row says was computed counts every step once, across the interruption
    for key in ("tokens_seen", "train_flops"):
        assert resumed["compute"][key] == row["compute"][key] > 0, key


@pytest.mark.slow
def test_killed_cell_resumes_to_the_same_result(tmp_path, data_root, reference):
    root = tmp_path / "killed"
    step = _kill_once_checkpointed(root, data_root)
    assert 2 <= step < 8, step
    (cdir,) = (root / "cells").iterdir()
    assert json.loads((cdir / "result.json").read_text())["status"] == "running"  # SIGKILL: nothing ran after
    assert not (cdir / "stage2" / "result.json").exists()

    resumed = _run(root, data_root)
    assert resumed["compute"]["resumed_from_step"] == step
    _same_result(resumed, cdir, reference)


# What submitit does on SLURM's USR2 warning: its handler requeues the job and exits (here: exit code 3).
SUBMITIT_LIKE = ("import signal, sys\n"
                 "signal.signal(signal.SIGUSR2, lambda *a: sys.exit(3))\n"
                 "from ablate.cli import main\n"
                 "sys.argv = ['ablate', *sys.argv[1:]]\n"
                 "main()\n")


@pytest.mark.slow
def test_signalled_cell_checkpoints_hands_on_and_resumes(tmp_path, data_root, reference):
    root = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, "-c", SUBMITIT_LIKE, *CELL, f"paths.root={root}",
                             f"paths.data_root={data_root}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 900
    while not list((root / "cells").glob("*/stage2/ckpt/last.ckpt")):   # stage 2 is training
        assert proc.poll() is None and time.monotonic() < deadline, "no stage-2 checkpoint in time"
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR2)
    log, _ = proc.communicate(timeout=600)
    # ablate's handler noted the signal, saved at the next optimizer step, then handed it to "submitit".
    assert proc.returncode == 3, log[-3000:]
    assert "handing the signal to the requeue handler" in log, log[-3000:]
    (cdir,) = (root / "cells").iterdir()
    row = json.loads((cdir / "result.json").read_text())
    assert row["status"] == "failed" and "interrupted" in row["error"]
    saved = int(torch.load(cdir / "stage2" / "ckpt" / "last.ckpt", weights_only=False)["global_step"])

    resumed = _run(root, data_root)
    assert resumed["compute"]["resumed_from_step"] == saved > 2
    _same_result(resumed, cdir, reference)
