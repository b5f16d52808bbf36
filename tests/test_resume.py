"""A cell killed hard in the middle of stage 2 and run again ends bit for bit where an uninterrupted run ends.

The interrupted run is SIGKILLed (no handler runs, nothing is flushed) as soon as its first stage-2
checkpoint exists; the re-run resumes from that checkpoint with the same data order and RNG state.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
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


@pytest.mark.slow
def test_killed_cell_resumes_to_the_same_result(tmp_path, data_root):
    reference = _run(tmp_path / "uninterrupted", data_root)

    root = tmp_path / "killed"
    step = _kill_once_checkpointed(root, data_root)
    assert 2 <= step < 8, step
    (cdir,) = (root / "cells").iterdir()
    assert json.loads((cdir / "result.json").read_text())["status"] == "running"  # SIGKILL: nothing ran after
    assert not (cdir / "stage2" / "result.json").exists()

    resumed = _run(root, data_root)
    assert resumed["status"] == "complete"
    assert resumed["compute"]["resumed_from_step"] == step
    assert resumed["cell_id"] == reference["cell_id"]
    # Every metric (training losses and every benchmark score) equal, and the trained weights bit for bit.
    assert resumed["metrics"] == reference["metrics"]
    a = torch.load(tmp_path / "uninterrupted" / "cells" / cdir.name / "stage2" / "weights.pt")
    b = torch.load(cdir / "stage2" / "weights.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
