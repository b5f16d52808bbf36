"""Tests of `logger=wandb`: run ids, groups, flat axes, env settings, and a real offline sweep's run files.

wandb >= 0.2x writes offline runs only as a binary transaction log (`offline-run-*/run-<id>.wandb`; no
`files/config.yaml` or `wandb-summary.json` until synced) and no longer ships a Python reader for it, so
`read_offline_run` below decodes the log itself: a 7-byte header, then LevelDB-style records (crc32,
length, type; 32 KiB blocks) whose payloads are wandb's own `Record` protobufs.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FAST, SMALL_DATA, ablate_cmd, compose

pytest.importorskip("wandb")

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, payload = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:                      # a block's tail too short for a record header is zero padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        payload = chunk if kind in (FULL, FIRST) else payload + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(payload)
            yield rec


def read_offline_run(run_dir: Path) -> dict:
    """{id, group, job_type, name, tags, config, summary} of one offline run directory."""
    (log,) = run_dir.glob("run-*.wandb")
    out = {"config": {}, "summary": {}, "exit_code": None}
    for rec in _records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(id=r.run_id, group=r.run_group, job_type=r.job_type, name=r.display_name,
                       tags=list(r.tags), project=r.project)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            for u in rec.summary.update:
                key = u.key or "/".join(u.nested_key)
                out["summary"][key] = json.loads(u.value_json)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def offline_runs(wandb_dir: Path, timeout: float = 60.0) -> list[dict]:
    """Every offline run under wandb_dir, each read once its log holds the exit record: wandb's service
    process writes the log and may still be flushing it when wandb.finish() has returned."""
    runs = []
    for d in sorted((wandb_dir / "wandb").glob("offline-run-*")):
        deadline = time.monotonic() + timeout
        run = read_offline_run(d)
        while run["exit_code"] is None and time.monotonic() < deadline:
            time.sleep(0.5)
            run = read_offline_run(d)
        runs.append(run)
    return runs


# ---- settings, ids, groups (no training) -------------------------------------------------------------------

def test_ids_are_stable_per_cell_and_stage_and_stage1_is_shared(tmp_path):
    from ablate import cell as C
    from ablate.train.wandb_logger import init_kwargs, run_id

    full = compose(["logger=wandb", "tuning=full"], tmp_path)
    lora = compose(["logger=wandb", "tuning=lora"], tmp_path)
    assert run_id(full, "instruct") == f"{C.cell_id(full)}-instruct" == run_id(compose(
        ["logger=wandb", "tuning=full"], tmp_path), "instruct")          # a requeue recomputes the same id
    assert run_id(full, "instruct") != run_id(lora, "instruct")
    # stage 1 is one artifact for both cells, so one run
    assert run_id(full, "align") == run_id(lora, "align") == f"{C.stage1_id(full)}-align"
    kw = init_kwargs(full, tmp_path, "instruct")
    assert kw["resume"] == "allow" and kw["job_type"] == "instruct" and kw["group"] == "single"
    assert {k: kw["config"][k] for k in C.AXES} == C.axes(full)
    assert kw["config"]["cell_id"] == C.cell_id(full) and kw["config"]["stage1_id"] == C.stage1_id(full)
    assert kw["config"]["cfg"]["encoder"]["name"] == "siglip"    # the full config, nested, for reference
    assert compose(["logger=wandb", "sweep_name=fig5"], tmp_path).sweep_name == "fig5"
    assert init_kwargs(compose(["logger=wandb", "sweep_name=fig5"], tmp_path), tmp_path, "align")["group"] == "fig5"


def test_env_sets_project_entity_mode_dir_and_overrides_win(tmp_path, monkeypatch):
    from ablate.train.wandb_logger import init_kwargs

    monkeypatch.setenv("WANDB_PROJECT", "proj-from-env")
    monkeypatch.setenv("WANDB_ENTITY", "team-x")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    kw = init_kwargs(compose(["logger=wandb"], tmp_path), tmp_path / "cell", "align")
    assert (kw["project"], kw["entity"], kw["mode"], kw["dir"]) == ("proj-from-env", "team-x", "disabled",
                                                                   str(tmp_path / "wb"))
    kw = init_kwargs(compose(["logger=wandb", "logger.project=cli"], tmp_path), tmp_path, "align")
    assert kw["project"] == "cli"
    for var in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var)
    kw = init_kwargs(compose(["logger=wandb"], tmp_path), tmp_path / "cell", "align")
    assert (kw["project"], kw["entity"], kw["mode"], kw["dir"]) == ("ablate", None, "online", str(tmp_path / "cell"))


def test_api_key_in_config_and_bad_mode_are_refused(tmp_path):
    from ablate.train.wandb_logger import init_kwargs

    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        init_kwargs(compose(["logger=wandb", "+logger.api_key=abc123"], tmp_path), tmp_path, "align")
    with pytest.raises(ValueError, match="online, offline, disabled"):
        init_kwargs(compose(["logger=wandb", "logger.mode=dryrun"], tmp_path), tmp_path, "align")


def test_group_from_swept_overrides(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from ablate.train import wandb_logger as W

    task = ["tuning=full,lora", "seed=range(0,3)", "resolution=224", "eval.benchmarks=[synth_qa,synth_pope]"]
    assert W._swept(task) == ["seed=range(0,3)", "tuning=full,lora"]          # a list value is not a sweep
    # a sweep file's hydra.sweeper.params count too; the group is stable across re-runs (new timestamped dirs)
    OmegaConf.save({"hydra": {"overrides": {"task": ["resolution=224", "tuning=full,lora"]},
                              "sweeper": {"params": {"freeze": "frozen_both,train_lm", "seed": "0,1,2"}}}},
                   tmp_path / "multirun.yaml")
    monkeypatch.setattr(W, "_multirun_sweep_dir", lambda: tmp_path)
    cfg = OmegaConf.create({"sweep_name": None})
    assert W.default_group(cfg) == "freeze=frozen_both,train_lm seed=0,1,2 tuning=full,lora"
    assert W.default_group(OmegaConf.create({"sweep_name": "fig5"})) == "fig5"
    (tmp_path / "multirun.yaml").unlink()
    assert W.default_group(cfg) == f"sweep-{tmp_path.name}"


def test_finish_run_reopens_the_cells_run_by_id(tmp_path, monkeypatch):
    """A requeued cell whose stage 2 was already done logs nothing in Lightning: the summary still lands."""
    import wandb

    from ablate.train.wandb_logger import finish_run, run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(["logger=wandb", f"logger.dir={tmp_path}"], tmp_path)
    row = {"cell_id": "x", "status": "complete", "error": None,
           "metrics": {"eval/synth_vqa/accuracy": 37.5, "eval/synth_pope/f1": 66.7, "train/stage2/loss": 1.25},
           "compute": {"wall_s": {"total": 12.0}, "gpu_hours": 0.0}, "params": {"stage2": {"trainable": 99}}}
    assert wandb.run is None
    finish_run(cfg, row)
    assert wandb.run is None                                   # finished: the next cell starts clean
    (run,) = offline_runs(tmp_path)
    assert run["id"] == run_id(cfg, "instruct") and run["job_type"] == "instruct"
    s = run["summary"]
    assert s["eval/synth_vqa/accuracy"] == 37.5 and s["eval/synth_pope/f1"] == 66.7
    assert s["status"] == "complete" and s["compute/wall_s/total"] == 12.0 and s["params/stage2/trainable"] == 99
    finish_run(cfg, {**row, "status": "failed", "error": "boom"})    # failed, nothing open: no new run
    assert len(offline_runs(tmp_path)) == 1


# ---- a real sweep, offline -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_offline_sweep_one_run_per_cell_and_stage(tmp_path, data_root):
    """Two cells sharing stage 1 in one process: 3 runs (1 align, 2 instruct), axes in config, metrics = row's."""
    wdir = tmp_path / "wb"
    wdir.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wdir), "WANDB_PROJECT": "ablate-test"}
    env.pop("WANDB_API_KEY", None)
    cmd = ablate_cmd("-m", "tuning=full,lora", *[o for o in FAST if not o.startswith("logger=")], "logger=wandb",
                     *SMALL_DATA, f"paths.root={tmp_path / 'runs'}", f"paths.data_root={data_root}",
                     "scale.stage1.max_steps=2", "scale.stage2.max_steps=2",
                     "eval.max_questions=4", "eval.benchmarks=[synth_qa,synth_pope]")
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(f.read_text()) for f in sorted((tmp_path / "runs" / "cells").glob("*/result.json"))]
    assert len(rows) == 2 and all(r["status"] == "complete" for r in rows)
    runs = offline_runs(wdir)
    assert sorted(r["job_type"] for r in runs) == ["align", "instruct", "instruct"]
    assert len({r["id"] for r in runs}) == 3
    assert {r["group"] for r in runs} == {"tuning=full,lora"}          # derived from the swept override
    assert all(r["project"] == "ablate-test" for r in runs)
    (align,) = [r for r in runs if r["job_type"] == "align"]
    assert align["id"] == f"{rows[0]['stage1_id']}-align" and rows[0]["stage1_id"] == rows[1]["stage1_id"]
    assert align["summary"]["train/stage1/loss"] == pytest.approx(rows[0]["metrics"]["train/stage1/loss"])
    for row in rows:
        (run,) = [r for r in runs if r["id"] == f"{row['cell_id']}-instruct"]
        assert {a: run["config"][a] for a in row["axes"]} == row["axes"]
        assert run["config"]["cell_id"] == row["cell_id"] and run["config"]["stage1_id"] == row["stage1_id"]
        evals = {k: v for k, v in row["metrics"].items() if k.startswith("eval/")}
        assert len(evals) >= 6 and "eval/synth_pope/f1" in evals
        assert {k: run["summary"][k] for k in evals} == evals           # exactly the row's numbers and units
        assert run["summary"]["status"] == "complete" and run["exit_code"] == 0
    assert {r["config"]["tuning"] for r in runs if r["job_type"] == "instruct"} == {"full", "lora"}
