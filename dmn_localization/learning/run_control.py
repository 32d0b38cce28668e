"""
Stopping and guarding a training run: signals, the run lock, the interruption it raises.

SIGINT (Ctrl-C) or SIGTERM asks a run to stop at the end of its step
(:func:`stop_on_signals`); a second signal stops it at once. The lock file keeps two
processes from training in one run directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import signal
import threading
import time
from typing import Any, Iterator

from dmn_localization.learning.train_config import TrainingError


class RunInUseError(TrainingError):
    """Another process is training in the run directory (two would corrupt its state)."""


def signal_exit_code(signal_name: str) -> int:
    """Return the shell's status of a process ``signal_name`` ended: 128 plus its number."""
    return 128 + int(getattr(signal, signal_name, signal.SIGTERM))


class TrainingInterrupted(Exception):
    """A signal stopped the run; its state at that step is in ``last.pt``, to resume from."""

    def __init__(self, signal_name: str, samples: int, out: Path) -> None:
        super().__init__(f'{out}: stopped by {signal_name} at {samples:,} samples; last.pt '
                         'holds that step, and the same command resumes from it')
        self.signal_name = signal_name
        self.samples = samples
        self.out = out

    @property
    def exit_code(self) -> int:
        """Return the shell's status of a process a signal ended: 128 plus its number."""
        return signal_exit_code(self.signal_name)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """
    Hold the lock file ``out/.lock`` while a process trains in ``out``.

    The lock is the kernel's (``flock``): it goes with the process, so a killed run
    leaves nothing to clean up. Raises :class:`RunInUseError` when another process holds it.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / '.lock', 'a+') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'unknown'
            raise RunInUseError(f'{out} is being trained by another process (pid {holder})')
        f.seek(0)
        f.truncate()
        f.write(f'{os.getpid()}\n')
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: A signal this soon (seconds) after the first is the same stop delivered twice, not a
#: second request: ``kill -- -PGID`` of ``make`` reaches make's child, and make forwards
#: the signal it got to that child as well.
SAME_STOP_S = 1.0


class StopRequest:
    """The signal that asked a run to stop, ``0`` until one did: a handler that records it."""

    def __init__(self) -> None:
        self.signum = 0
        self._first_at = 0.0  # time.monotonic() of the first signal

    def record(self, signum: int) -> bool:
        """
        Record ``signum``; return whether it asks again: a stop at once, not at the step.

        The first signal and a copy of it (within :data:`SAME_STOP_S`) return False.
        """
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first_at = signum, now
            return False
        return now - self._first_at >= SAME_STOP_S

    def __call__(self, signum: int, frame: Any) -> None:
        if self.record(signum):  # asked twice: stop now, as without this handler
            raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals(signals: tuple = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """
    Record ``signals`` in a :class:`StopRequest` instead of ending the process.

    The training loop stops at the end of its step when one came. A signal ignored when
    this starts (``nohup``, a shell's background job) stays ignored, and outside the main
    thread, where Python cannot set handlers, nothing changes.
    """
    request = StopRequest()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, request)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
