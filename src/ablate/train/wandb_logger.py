"""Weights & Biases logging: one W&B run per cell and stage, grouped by sweep, resumable by a stable id.

Run layout (what the W&B UI groups and filters on):
  * `group`    = cfg.sweep_name, else the swept overrides of the Hydra multirun (`seed=0,1 tuning=full,lora`),
                 else "single" for a one-off `python -m ablate`;
  * `job_type` = the stage ("align" or "instruct");
  * `id`       = `<cell_id>-instruct` for stage 2 and `<stage1_id>-align` for stage 1 (stage 1 is shared by
                 every cell with the same stage-1 identity, so its run belongs to that artifact, not to a
                 cell). A requeued cell computes the same id and resumes its run (`resume="allow"`);
  * `config`   = every axis as a flat key (encoder, resolution, lm, tuning, freeze, data, scale, seed), the
                 cell id, stage-1 id, stage and sweep, plus the resolved config under `cfg` for reference;
  * `summary`  = the last training losses (Lightning), then, from `finish_run` after evaluation, the row's
                 metrics (`eval/<bench>/<metric>` in the row's units), status and compute numbers.

The API key is read by wandb itself from WANDB_API_KEY (or `wandb login`'s netrc); it never goes through
the config, which is logged, written to rows and pickled by launchers.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ablate")

STAGES = ("align", "instruct")
_SECRET_KEYS = ("api_key", "key", "token", "password")
_GROUP_MAX = 120                     # W&B caps group names at 128 characters


def run_id(cfg: DictConfig, stage: str) -> str:
    """The stable W&B run id of a stage: the same cell (or shared stage 1) always gets the same run."""
    from ablate import cell as C

    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {STAGES}")
    owner = C.stage1_id(cfg) if stage == "align" else C.cell_id(cfg)
    return f"{owner}-{stage}"


def _multirun_sweep_dir() -> Path | None:
    """The sweep directory of the running Hydra multirun, or None outside one (tests, plain runs)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    except (ImportError, ValueError):
        return None


def _swept(overrides) -> list[str]:
    """The overrides of a multirun command line that sweep (`a=1,2`, `range(..)`, `choice(..)`), as typed.

    Hydra's own parser decides, so a list value (`eval.benchmarks=[a,b]`) is not mistaken for a sweep.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return sorted(o.input_line for o in parsed if o.is_sweep_override())


def default_group(cfg: DictConfig) -> str:
    """cfg.sweep_name, else derived from the multirun's swept overrides, else "single".

    The swept overrides are read from the sweep dir's multirun.yaml (Hydra writes it at launch), so re-running
    the same sweep command -- the resume path -- lands in the same group despite a new timestamped dir.
    """
    if cfg.get("sweep_name"):
        return str(cfg.sweep_name)
    sweep_dir = _multirun_sweep_dir()
    if sweep_dir is None:
        return "single"
    swept: list[str] = []
    saved = sweep_dir / "multirun.yaml"
    if saved.exists():
        hydra = OmegaConf.load(saved).hydra
        # sweeps given on the command line, plus those a sweep file lists under hydra.sweeper.params
        params = hydra.get("sweeper", {}).get("params") or {}
        swept = _swept([*hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())])
    if not swept:
        return f"sweep-{sweep_dir.name}"
    group = " ".join(swept)
    if len(group) > _GROUP_MAX:      # keep it readable, and distinct through a hash of the whole
        digest = hashlib.sha256(group.encode()).hexdigest()[:8]
        group = group[: _GROUP_MAX - 10] + "~" + digest
    return group


def run_config(cfg: DictConfig, stage: str) -> dict:
    """Flat keys W&B can group, filter and plot in parallel coordinates; the full config nested under `cfg`."""
    from ablate import cell as C

    flat = dict(C.axes(cfg))
    flat.update(cell_id=C.cell_id(cfg), stage1_id=C.stage1_id(cfg), stage=stage,
                sweep=cfg.get("sweep_name") or default_group(cfg))
    full = C.to_container(cfg)
    full.pop("hydra", None)
    return {**flat, "cfg": full}


def _run_name(cfg: DictConfig, stage: str) -> str:
    from ablate import cell as C

    a = C.axes(cfg)
    shared = f"{a['encoder']}/{a['resolution']}/{a['lm']}"
    tail = f"/s{a['seed']}" if stage == "align" else f"/{a['tuning']}/{a['freeze']}/s{a['seed']}"
    return f"{stage}:{shared}{tail}"


def _settings(cfg: DictConfig, directory: Path) -> dict:
    """project, entity, mode, dir, tags from cfg.logger (whose defaults read WANDB_* env variables)."""
    lg = cfg.logger
    bad = [k for k in lg if str(k).lower() in _SECRET_KEYS]
    if bad:
        raise ValueError(f"logger.{bad[0]}: W&B credentials must not be in the config (it is logged and saved); "
                         "set WANDB_API_KEY in the environment or run `wandb login`")
    mode = str(lg.get("mode") or "online")
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logger.mode={mode!r}: valid values are online, offline, disabled (or set WANDB_MODE)")
    # a run's files live with the cell (or shared stage 1) it logs unless WANDB_DIR / logger.dir says otherwise
    out = Path(str(lg.get("dir") or directory)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return {"project": str(lg.project), "entity": lg.get("entity") or None, "mode": mode, "dir": str(out),
            "tags": [str(t) for t in (lg.get("tags") or [])]}


def init_kwargs(cfg: DictConfig, directory: Path, stage: str) -> dict:
    """Everything `wandb.init` gets for one stage's run (tests read this to check the layout)."""
    from ablate import cell as C

    s = _settings(cfg, directory)
    return {"project": s["project"], "entity": s["entity"], "mode": s["mode"], "dir": s["dir"],
            "id": run_id(cfg, stage), "resume": "allow", "name": _run_name(cfg, stage),
            "group": default_group(cfg), "job_type": stage, "config": run_config(cfg, stage),
            "tags": [stage, str(C.axes(cfg)["scale"]), *s["tags"]]}


def finish_active(exit_code: int = 0) -> None:
    """Close the run this process has open, if any: a new cell or stage must never log into it."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def _stage1_summary(cfg: DictConfig) -> dict:
    """The shared stage 1's own result (written by run.py right after it trains) for its run's summary."""
    import json

    from ablate import cell as C

    path = C.stage1_dir(cfg) / "result.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    names = {"final_loss": "train/stage1/loss", "steps": "train/stage1/steps", "wall_s": "compute/wall_s/stage1",
             "tokens_seen": "compute/tokens_seen", "train_flops": "compute/train_flops"}
    return {new: res[old] for old, new in names.items() if isinstance(res.get(old), (int, float))}


def close_previous(cfg: DictConfig) -> None:
    """Finish the run left open by the last stage or cell; stage 1's run first gets stage 1's result."""
    import wandb

    if wandb.run is not None and wandb.run.id == run_id(cfg, "align"):
        wandb.run.summary.update(_stage1_summary(cfg))
    finish_active()


def make_wandb_logger(cfg: DictConfig, directory: Path, stage: str):
    """Lightning's WandbLogger for one stage; closes any run still open from the previous stage or cell."""
    from lightning.pytorch.loggers import WandbLogger

    kw = init_kwargs(cfg, directory, stage)
    close_previous(cfg)
    # Lightning passes unknown kwargs to wandb.init; `version` would override `id`, so give only `id`.
    # The run starts lazily at the first log, and only on global rank 0.
    logger = WandbLogger(save_dir=kw.pop("dir"), log_model=False, **kw)
    # Lightning always sends `anonymous` (None here), which current wandb answers with a deprecation warning
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _summary(row: dict) -> dict:
    """The row's numbers for the run summary: metrics under their own names, then status and compute."""
    out = {k: v for k, v in (row.get("metrics") or {}).items() if isinstance(v, (int, float))}
    comp = row.get("compute") or {}
    wall = comp.get("wall_s") or {}
    out.update({f"compute/wall_s/{k}": v for k, v in wall.items() if isinstance(v, (int, float))})
    out.update({f"compute/{k}": comp[k] for k in ("gpu_hours", "tokens_seen", "train_flops", "peak_mem_mb")
                if isinstance(comp.get(k), (int, float))})
    st2 = (row.get("params") or {}).get("stage2") or {}
    if isinstance(st2.get("trainable"), (int, float)):
        out["params/stage2/trainable"] = st2["trainable"]
    out["status"] = row.get("status")
    if row.get("error"):
        out["error"] = str(row["error"])[:500]
    return out


def finish_run(cfg: DictConfig, row: dict) -> None:
    """After a cell: its row's metrics into the summary of the cell's instruct run, then wandb.finish().

    The instruct run is usually still open (Lightning started it in stage 2). When a complete cell has none
    open -- stage 2 had finished before a requeue, so Lightning had nothing to log -- the run is reopened by
    its stable id, so the summary always lands on the one run of this cell. A cell that failed before any
    run started gets no run.
    """
    import wandb

    if row.get("status") != "complete" and wandb.run is None:
        return                          # failed before any W&B run: nothing to annotate
    want = run_id(cfg, "instruct")
    if wandb.run is not None and wandb.run.id != want:      # stage 1's run: the cell stopped in or after it
        s1 = _stage1_summary(cfg) if wandb.run.id == run_id(cfg, "align") else {}
        wandb.run.summary.update(s1)
        # stage 1's result exists only if stage 1 finished: then its run succeeded, whatever came after
        finish_active(exit_code=0 if s1 or row.get("status") == "complete" else 1)
    if wandb.run is None:
        if row.get("status") != "complete":
            return
        from ablate import cell as C

        kw = init_kwargs(cfg, C.cell_dir(cfg), "instruct")
        wandb.init(**kw)
    wandb.run.summary.update(_summary(row))
    finish_active(exit_code=0 if row.get("status") == "complete" else 1)
