"""A resumable job for the requeue test: counts to `steps`, one step a second, and survives its time limit.

submitit calls `checkpoint` when SLURM's USR2 warning arrives; the default (Checkpointable's) pickles this
object as it is, with `done` so far, and requeues it, so the next run carries on instead of starting over.
"""
import os
import time
from pathlib import Path

import submitit


class Countdown(submitit.helpers.Checkpointable):
    def __init__(self, progress: str, steps: int) -> None:
        self.progress = progress
        self.steps = steps
        self.done = 0

    def __call__(self) -> dict:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        while self.done < self.steps:
            time.sleep(1)
            self.done += 1
            # One line per step, tagged with the run it happened in, so the test can see the resume point.
            with Path(self.progress).open("a") as f:
                f.write(f"{restarts} {self.done}\n")
        return {"done": self.done, "restarts": restarts}
