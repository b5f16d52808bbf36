"""Cell identity, directories and the result row.

A cell is one point of the design space. Its id is a hash of every setting that can change its result, so
re-running a sweep finds finished cells by their row and a changed setting never reuses a stale one.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SCHEMA_VERSION = 1
AXES = ("encoder", "resolution", "lm", "tuning", "freeze", "data", "scale", "seed")

# Keys that never change what a cell computes: where it is written, how it is launched and logged, and the
# switches whose effect on numbers is bounded and tested (see docs/performance.md).
_NOT_IDENTITY = {
    "paths", "run", "sweep_name", "logger", "hydra", "eval",
}
# trainer.length_grouping is NOT here: it changes which samples share a batch, so it changes the numbers.
_TRAINER_NOT_IDENTITY = {
    "num_workers", "log_every_n_steps", "checkpoint_every_n_steps", "gradient_checkpointing",
    "attn_implementation", "compile", "accelerator", "devices", "num_nodes", "strategy",
    "feature_cache", "fused_gelu",
}
# Result-changing switches added later: left out of the id at their default, so existing cell ids stay valid.
_TRAINER_ID_IF_SET = {"length_grouping": False}


def _digest(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def to_container(cfg: DictConfig) -> dict:
    # A job config composed ahead of launch (plan mode, the sweep callback) still holds `hydra`, whose
    # per-job values (hydra.job.num) are unset; it is never part of a cell, so leave it out before resolving.
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def identity(cfg: DictConfig) -> dict:
    """The part of the config that determines a cell's result."""
    c = to_container(cfg)
    ident = {k: v for k, v in c.items() if k not in _NOT_IDENTITY}
    trainer = ident.get("trainer", {})
    ident["trainer"] = {k: v for k, v in trainer.items() if k not in _TRAINER_NOT_IDENTITY
                        and not (k in _TRAINER_ID_IF_SET and v == _TRAINER_ID_IF_SET[k])}
    return ident


def cell_id(cfg: DictConfig) -> str:
    return _digest(identity(cfg))


def stage1_identity(cfg: DictConfig) -> dict:
    """Stage 1 depends on encoder, resolution, lm, its data and settings, and the seed: nothing of stage 2."""
    ident = identity(cfg)
    return {
        "encoder": ident["encoder"], "resolution": ident["resolution"], "lm": ident["lm"],
        "data": ident["data"], "seed": ident["seed"],
        "scale": {k: v for k, v in ident["scale"].items() if k != "stage2"},
        "precision": ident["trainer"].get("precision"),
        "max_grad_norm": ident["trainer"].get("max_grad_norm"),
        **{k: ident["trainer"][k] for k in _TRAINER_ID_IF_SET if k in ident["trainer"]},
    }


def stage1_id(cfg: DictConfig) -> str:
    return _digest(stage1_identity(cfg))


def axes(cfg: DictConfig) -> dict:
    """The axis values of a cell, by option name (not hub id) so they group cleanly in tables."""
    return {
        "encoder": cfg.encoder.name, "resolution": int(cfg.resolution), "lm": cfg.lm.name,
        "tuning": cfg.tuning.name, "freeze": cfg.freeze.name, "data": cfg.data.name,
        "scale": cfg.scale.name, "seed": int(cfg.seed),
    }


def results_root(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.root)).expanduser().resolve()


def cell_dir(cfg: DictConfig) -> Path:
    return results_root(cfg) / "cells" / cell_id(cfg)


def stage1_dir(cfg: DictConfig) -> Path:
    return results_root(cfg) / "stage1" / stage1_id(cfg)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_row(directory: Path) -> dict | None:
    path = directory / "result.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # treated as absent: a complete row is only ever written atomically


def stage_done(directory: Path) -> bool:
    """A training stage is done when its result.json exists: written after its weights.pt, both atomically."""
    return (directory / "result.json").is_file() and (directory / "weights.pt").is_file()


def is_complete(directory: Path) -> bool:
    row = read_row(directory)
    return bool(row) and row.get("status") == "complete"


def eval_matches(row: dict, cfg: DictConfig) -> bool:
    """Whether a row was evaluated with this config's `eval` settings. They are not part of the cell's id
    (the trained weights don't depend on them), but a row evaluated differently is not this run's result:
    its cell is evaluated again, reusing both trained stages."""
    return (row.get("config") or {}).get("eval") == OmegaConf.to_container(cfg.eval, resolve=True)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def new_row(cfg: DictConfig, status: str) -> dict:
    from ablate import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell_id(cfg),
        "stage1_id": stage1_id(cfg),
        "status": status,
        "error": None,
        "sweep": cfg.get("sweep_name"),
        "axes": axes(cfg),
        "metrics": {},
        "per_question": {},
        "params": {},
        "compute": {},
        "config": to_container(cfg),
        "git_sha": git_sha(),
        "ablate_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename: a half-written artifact is never read."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
