"""The ranks of one multi-device cell: which one is rank 0, and how it tells the others what it decided.

Under DDP/FSDP every rank runs the whole cell. Decisions that depend on the filesystem (is the shared stage-1
artifact there? is stage 2 done?) must be taken once, by rank 0, or ranks could disagree and wait on each
other in different trainings. The ranks have no process group before Lightning creates one inside `fit`, so
rank 0 writes each decision to a small file named by a token that all ranks of this launch share:
  - Lightning's own launcher (one node, no SLURM) starts the other ranks from rank 0's environment, so rank 0
    puts a fresh token into its environment before the first `fit`;
  - under SLURM all tasks start together; the job id and restart count name the launch.
A rank that waits for a decision gives up when rank 0 wrote an abort file or its launcher process died.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("ablate")

_TOKEN_VAR = "ABLATE_RANK_TOKEN"
POLL_S = 0.2


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def world_size(cfg) -> int:
    return int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)


def token() -> str:
    """This launch's name, the same on every rank (see the module docstring)."""
    tok = os.environ.get(_TOKEN_VAR)
    if tok:
        return tok
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        tok = f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    elif global_rank() == 0:
        tok = uuid.uuid4().hex
    else:
        raise RuntimeError(f"rank {global_rank()} started without {_TOKEN_VAR} in its environment: ablate's "
                           "other ranks must be started by Lightning from rank 0, or by SLURM (srun)")
    os.environ[_TOKEN_VAR] = tok  # inherited by the ranks Lightning starts from this process
    return tok


def _path(cdir: Path, name: str) -> Path:
    return Path(cdir) / ".ranks" / f"{token()}.{name}.json"


def decide(cfg, cdir: Path, name: str, value: Any) -> None:
    """Rank 0: publish a decision for the other ranks of this launch (nothing to do on one rank)."""
    if world_size(cfg) > 1:
        from ablate.cell import write_json
        write_json(_path(cdir, name), {"value": value})


def follow(cfg, cdir: Path, name: str) -> Any:
    """Rank > 0: wait for rank 0's decision `name` and return it."""
    path, abort = _path(cdir, name), _path(cdir, "abort")
    launched_by_parent = "SLURM_PROCID" not in os.environ
    t0 = last_note = time.monotonic()
    while True:
        if path.is_file():
            return json.loads(path.read_text())["value"]
        if abort.is_file():
            error = json.loads(abort.read_text())["error"]
            raise RuntimeError(f"rank 0 failed, so rank {global_rank()} stops: {error}")
        if launched_by_parent and os.getppid() == 1:  # rank 0 (our parent) died without a word
            raise RuntimeError(f"rank 0 exited while rank {global_rank()} waited for its '{name}' decision")
        if time.monotonic() - last_note > 60:
            last_note = time.monotonic()
            log.info("rank %d: still waiting for rank 0's '%s' decision (%.0f s; rank 0 may be waiting for "
                     "another job's stage 1)", global_rank(), name, last_note - t0)
        time.sleep(POLL_S)


def agree(cfg, cdir: Path, name: str, compute: Callable[[], Any]) -> Any:
    """Rank 0 computes and publishes; the other ranks wait for its answer. Every rank returns the same value."""
    if global_rank() != 0:
        return follow(cfg, cdir, name)
    value = compute()
    decide(cfg, cdir, name, value)
    return value


def abort(cfg, cdir: Path, error: str) -> None:
    """Rank 0 failed: let waiting ranks stop. Never raises (it runs while an error is being reported)."""
    try:
        if world_size(cfg) > 1 and os.environ.get(_TOKEN_VAR):
            from ablate.cell import write_json
            write_json(_path(cdir, "abort"), {"error": error})
    except Exception as e:  # noqa: BLE001
        log.warning("could not tell the other ranks that rank 0 failed: %s", e)
