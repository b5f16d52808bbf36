"""CellSweeper: Hydra's basic sweeper, minus the jobs whose cells are already complete.

SweepCallback.on_multirun_start composes every job before launch, finds the complete ones by their rows, and
puts their overrides under `hydra.sweeper.skip`; this sweeper then hands only the rest to the launcher. So
re-running a finished sweep submits nothing (no SLURM job, no process), and widening a grid runs only the
new cells. The cells that are launched still check their own row first (a cell finished meanwhile is skipped).
It lives here because Hydra instantiates sweepers only from the `hydra_plugins` namespace package.
"""
from __future__ import annotations

import logging
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

log = logging.getLogger("ablate")


class CellSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, skip: Any = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.skip = {tuple(str(o) for o in job) for job in (skip or [])}

    def split_arguments(self, overrides, max_batch_size):  # BasicSweeper.sweep calls it through self
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        todo = [job for job in jobs if tuple(job) not in self.skip]
        if len(todo) < len(jobs):
            log.info("ablate: %d of %d cells are complete and not launched; launching %d",
                     len(jobs) - len(todo), len(jobs), len(todo))
        if not todo:
            return []
        n = max_batch_size if max_batch_size and max_batch_size > 0 else len(todo)
        return [todo[i:i + n] for i in range(0, len(todo), n)]
