"""Hydra callbacks of a sweep: check and plan every cell before launching any, skip the complete ones,
summarise at the end."""
from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, flag_override

log = logging.getLogger("ablate")


def summary_path(sweep_dir: str) -> Path:
    return Path(sweep_dir) / "cells.jsonl"


def expand_sweep(config: DictConfig) -> list[DictConfig]:
    """Every job config of a multirun (sweep file params and command line), composed as the launcher will."""
    from ablate.sweeps import compose_job, job_overrides

    return [compose_job(config, ov, i) for i, ov in enumerate(job_overrides(config))]


def _stop(message: str, code: int = 2) -> None:
    print(f"ablate: the sweep was not launched: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


class SweepCallback(Callback):
    """on_multirun_start: check the sweep file, the launcher and every cell (one error before anything is
    launched), print the plan, and leave complete cells out of the launch.
    on_multirun_end: print one line per cell and exit non-zero if any cell failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns an exception raised here into a warning and launches anyway; nothing may launch
        # unchecked, so any failure of the checks themselves stops the sweep too.
        try:
            self._prepare(config)
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            _stop(f"the pre-launch check failed: {type(e).__name__}: {e}")

    def _prepare(self, config: DictConfig) -> None:
        from ablate import sweeps
        from ablate.plan import describe, plan_cells

        name = sweeps.sweep_choice(config)
        if name:
            errors = sweeps.sweep_file_errors(name, config)
            if errors:
                _stop("fix the sweep file first:\n  - " + "\n  - ".join(errors))
        overrides = sweeps.job_overrides(config)
        problems: dict[str, list[int]] = {}  # problem -> the cells that have it (most are shared by all)
        jobs: dict[int, DictConfig] = {}
        for i, ov in enumerate(overrides):
            try:
                jobs[i] = sweeps.compose_job(config, ov, i)
            except Exception as e:  # noqa: BLE001 - Hydra's composition error names the bad override
                problems.setdefault(f"{type(e).__name__}: {e}", []).append(i)
        plan = plan_cells(list(jobs.values())) if len(jobs) == len(overrides) else None
        self._check_cells(config, jobs, plan, problems)
        if plan is not None:
            print((f"sweep {name}: " if name else "") + describe(plan), flush=True)
        if problems:
            def which(cells: list[int]) -> str:
                if len(cells) == len(overrides):
                    return f"all {len(overrides)} cells"
                return ("cell " if len(cells) == 1 else "cells ") + \
                    ", ".join(f"#{i} ({' '.join(overrides[i])})" for i in cells)
            _stop("fix these first:\n" + "\n".join(f"  - {p}\n      [{which(c)}]" for p, c in problems.items()))
        if config.run.get("plan"):
            sys.exit(0)
        self._skip_complete(config, overrides, plan)

    @staticmethod
    def _check_cells(config: DictConfig, jobs: dict, plan, problems: dict) -> None:
        """Validate every cell that will run, and the launcher's request against the cells."""
        from ablate import sweeps
        from ablate.config import ConfigError, validate

        for n, (i, job) in enumerate(jobs.items()):
            if plan is not None and not plan[n].to_run:
                continue  # complete cells are not launched (and checking them would import torch for nothing)
            try:
                validate(job)
            except ConfigError as e:
                for line in str(e).splitlines()[1:]:  # "invalid ablate config:" then one "  - ..." per problem
                    problems.setdefault(line.strip().removeprefix("- "), []).append(i)
            for line in sweeps.cell_launch_errors(job):
                problems.setdefault(line, []).append(i)
        if plan is not None:
            for line in sweeps.launcher_errors(config, list(jobs.values())):
                problems[line] = list(jobs)

    @staticmethod
    def _skip_complete(config: DictConfig, overrides: list[list[str]], plan) -> None:
        """Hand the sweeper the cells to leave out (hydra_plugins.ablate_sweeper); list them in the summary."""
        from ablate.sweeps import BASIC_SWEEPER, CELL_SWEEPER

        # Complete cells, and jobs that are the same cell as an earlier job (they differ only in settings that
        # don't change a result): two jobs writing one cell folder at once would clash.
        done = [(ov, p) for ov, p in zip(overrides, plan) if not p.to_run]
        if not done:
            return
        if str(config.hydra.sweeper.get("_target_")) != BASIC_SWEEPER:
            log.warning("hydra.sweeper is not Hydra's basic sweeper: %d complete cells are launched and skip "
                        "themselves", len(done))
            return
        sweeper = config.hydra.sweeper
        params = sweeper.get("params")
        with flag_override(config, ["struct", "readonly"], [False, False]):
            # A new untyped node: Hydra's BasicSweeperConf has no `skip` field to set.
            config.hydra.sweeper = {
                "_target_": CELL_SWEEPER, "max_batch_size": sweeper.get("max_batch_size"),
                "params": OmegaConf.to_container(params) if params is not None else None,
                "skip": [list(ov) for ov, _ in done]}
        path = summary_path(config.hydra.sweep.dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for _, p in done:
                if p.status == "duplicate":
                    continue
                f.write(json.dumps({"cell_id": p.cell_id, "status": "complete", "skipped": True, "axes": p.axes,
                                    "error": None, "wall_s": None, "metrics": p.metrics}, default=str) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = summary_path(config.hydra.sweep.dir)
        if not path.exists():
            return
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        skipped = sum(1 for r in lines if r.get("skipped"))
        print(f"\nablate sweep summary ({len(lines)} cells, {skipped} already complete; rows under "
              f"{config.paths.root}/cells):")
        for r in lines:
            ax = r.get("axes") or {}
            metrics = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in (r.get("metrics") or {}).items()
                               if isinstance(v, (int, float)))
            wall = "skipped" if r.get("skipped") else (f"{r['wall_s']:.0f}s" if r.get("wall_s") else "-")
            what = " ".join(f"{k}={v}" for k, v in ax.items())
            print(f"  {r['status']:<9} {r.get('cell_id')}  {what}  {wall}  {metrics or (r.get('error') or '')}")
        failed = [r for r in lines if r.get("status") != "complete"]
        if failed:
            print(f"ablate: {len(failed)} of {len(lines)} cells failed (see error.txt in their cell folders)",
                  file=sys.stderr)
            sys.exit(1)


__all__ = ["SweepCallback", "expand_sweep", "summary_path"]
