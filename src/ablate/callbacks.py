"""Hydra callbacks of a sweep: check and plan every cell before launching any, summarise at the end."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("ablate")


def summary_path(sweep_dir: str) -> Path:
    return Path(sweep_dir) / "cells.jsonl"


def expand_sweep(config: DictConfig) -> list[DictConfig]:
    """Every job config of a multirun, composed exactly as the launcher will compose it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    batches = BasicSweeper.split_arguments(parsed, None)
    loader = GlobalHydra.instance().config_loader()
    return [loader.load_sweep_config(config, list(job)) for job in batches[0]]


class SweepCallback(Callback):
    """on_multirun_start: validate all cells (one error before anything runs) and print the plan.
    on_multirun_end: print one line per cell and exit non-zero if any cell failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from ablate.config import ConfigError
        from ablate.plan import describe, plan_cells

        jobs = expand_sweep(config)
        errors = []
        for i, job in enumerate(jobs):
            try:
                from ablate.config import validate

                validate(job)
            except ConfigError as e:
                overrides = " ".join(job.hydra.overrides.task)
                errors.append(f"cell #{i} ({overrides}):\n{e}")
        if errors:
            print("ablate: the sweep was not launched; fix these cells first:\n" + "\n".join(errors),
                  file=sys.stderr)
            sys.exit(2)
        plan = plan_cells(jobs)
        print(describe(plan), flush=True)
        if config.run.get("plan"):
            sys.exit(0)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = summary_path(config.hydra.sweep.dir)
        if not path.exists():
            return
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        print(f"\nablate sweep summary ({len(lines)} cells, rows under {config.paths.root}/cells):")
        for r in lines:
            ax = r.get("axes") or {}
            metrics = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in (r.get("metrics") or {}).items()
                               if isinstance(v, (int, float)))
            wall = f"{r['wall_s']:.0f}s" if r.get("wall_s") else "-"
            what = " ".join(f"{k}={v}" for k, v in ax.items())
            print(f"  {r['status']:<9} {r.get('cell_id')}  {what}  {wall}  {metrics or (r.get('error') or '')}")
        failed = [r for r in lines if r.get("status") != "complete"]
        if failed:
            print(f"ablate: {len(failed)} of {len(lines)} cells failed (see error.txt in their cell folders)",
                  file=sys.stderr)
            sys.exit(1)
