"""Checkpoint on SLURM's warning signal: save last.ckpt at the next optimizer step, then let submitit requeue.

SLURM sends USR2 `signal_delay_s` before a job's time limit (and sites may send it before preempting).
submitit's handler requeues the job and exits at once, losing every step since the last periodic checkpoint.
While a cell trains, ablate's handler stands in front of it: it only notes the signal. At the next optimizer
step `CheckpointOnSignal` saves `last.ckpt` (atomically, as every Lightning checkpoint) and hands the signal
to submitit's handler; between stages the runner hands it on once the finished stage is written
(`hand_on`). Before evaluation the runner puts submitit's handler back (`release`), so a signal there
requeues at once, after one log line (evaluation results are cached per benchmark). Where no handler was installed before
(outside submitit), USR2 keeps its default meaning and nothing here is active.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

SIGNUM = signal.SIGUSR2
_previous = None   # the handler ablate's stands in front of (submitit's)
_pending = None    # (signum, frame) of a signal not handed on yet


def _note(signum, frame) -> None:
    global _pending
    log.warning("signal %s: the cell checkpoints at its next safe point, then requeues", signum)
    _pending = (signum, frame)


def install() -> bool:
    """Stand in front of the current USR2 handler; False (and nothing done) when there is none to defer to."""
    global _previous
    current = signal.getsignal(SIGNUM)
    if current is _note:
        return True
    if not callable(current):
        return False
    _previous = current
    signal.signal(SIGNUM, _note)
    return True


def pending() -> bool:
    return _pending is not None


def hand_on(after: str | None = None) -> None:
    """If a signal is pending, give it to the handler it was meant for (submitit: requeue, then exit).
    `after` says in the log what was saved first (the callback logs its own checkpoint instead)."""
    global _pending
    if _pending is not None and _previous is not None:
        if after:
            log.warning("%s; handing the signal to the requeue handler", after)
        signum, frame = _pending
        _pending = None
        previous = release()
        previous(signum, frame)


def release(during: str | None = None):
    """Put the original handler back (a pending signal is handed on first by hand_on); return it. With
    `during` (what runs from now on), a later signal is logged before that handler requeues, so every requeue
    leaves a line in the job's log."""
    global _previous
    previous, _previous = _previous, None
    if previous is not None:
        signal.signal(SIGNUM, _logged(previous, during) if during else previous)
    return previous


def _logged(handler, during: str):
    def requeue_now(signum, frame) -> None:
        log.warning("signal %s during %s: requeueing now (finished work is saved or cached)", signum, during)
        handler(signum, frame)
    return requeue_now


class CheckpointOnSignal(Callback):
    """Saves `path` at the first optimizer-step boundary after the signal, then hands the signal on."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._active = False
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._active = install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active or trainer.global_step == self._last_step:
            return               # mid-accumulation: a checkpoint here could not resume exactly
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return               # the stage is finishing: the runner hands the signal on once it is written
        self._last_step = trainer.global_step
        stop = pending()
        if trainer.world_size > 1:  # every rank must save (and stop) at the same step, or they hang
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.path)
            log.warning("saved %s at step %d; handing the signal to the requeue handler", self.path,
                        trainer.global_step)
            hand_on()            # rank 0 exits here; other ranks return and are stopped by the requeue
