"""The USR2 handling of train/preempt.py in-process, with a stand-in for submitit's requeue handler."""
from __future__ import annotations

import logging
import os
import signal

import pytest

from ablate.train import preempt


@pytest.fixture
def requeue_handler():
    """A callable USR2 handler standing where submitit's would; the original handler is restored after."""
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    preempt.release()
    preempt._pending = None
    signal.signal(signal.SIGUSR2, before)


def test_a_signal_while_training_waits_for_the_checkpoint_then_requeues(requeue_handler, caplog):
    assert preempt.install()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert preempt.pending() and requeue_handler == []          # noted, not handed on yet
    with caplog.at_level(logging.WARNING, logger="ablate.train.preempt"):
        preempt.hand_on(after="stage instruct finished and saved")
    assert requeue_handler == [signal.SIGUSR2] and not preempt.pending()
    assert "stage instruct finished and saved; handing the signal to the requeue handler" in caplog.text


def test_a_signal_during_evaluation_requeues_at_once_and_says_so(requeue_handler, caplog):
    assert preempt.install()
    preempt.hand_on(after="training saved")                      # nothing pending: nothing happens
    assert requeue_handler == [] and "training saved" not in caplog.text
    preempt.release(during="evaluation")
    with caplog.at_level(logging.WARNING, logger="ablate.train.preempt"):
        os.kill(os.getpid(), signal.SIGUSR2)
    assert requeue_handler == [signal.SIGUSR2]
    assert f"signal {int(signal.SIGUSR2)} during evaluation: requeueing now" in caplog.text


def test_without_a_requeue_handler_nothing_is_installed():
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        assert preempt.install() is False
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, before)
