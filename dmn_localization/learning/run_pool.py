"""
Worker processes that train runs side by side and stop together on one signal.

``dmn_results --jobs N`` trains N runs at a time, each in a process of its own. A stop
must reach every one of them exactly once: a run signalled twice stops at once, back to
its last checkpoint, instead of saving the step it is in
(:func:`.run_control.stop_on_signals`). So signals reach the workers through the parent
alone:

- each worker leaves the parent's process group, so a terminal's Ctrl-C or
  ``kill -- -PGID`` of the whole job reaches the parent only;
- the parent, on SIGINT or SIGTERM, forwards one SIGTERM to every worker, cancels the
  runs not yet handed out and tells the workers to take no further run; each worker
  saves its run at the step it is in. A second signal is forwarded as well: the runs
  then stop at once; unless it is a copy of the first (:class:`.run_control.StopRequest`:
  ``kill -- -PGID`` of ``make results`` signals it twice);
- a worker whose parent dies without forwarding (SIGKILL) gets SIGTERM from the kernel
  (Linux's parent-death signal) and stops the same way. The kernel sends it as each
  thread of the parent ends, the first while the parent still lives: a worker whose
  call a signal ended that was not the parent's stop waits up to :data:`ORPHAN_WAIT_S`
  for the parent to end, and exits if it did, instead of taking the next call.

The kernel sends one signal for each thread of the parent that ends, so a worker gets
them in bursts, and a signal can come while the handler of the one before runs. The
handler therefore takes no lock (the stop is a flag in shared memory, not an event
behind a lock, which a nested handler would wait on for ever), ends a call once, and
starts no second wait while one runs (nested waits would exhaust the stack).

Leaving the context then raises :class:`PoolStopped` once every worker has ended, and
the same command resumes every run.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
import ctypes
import multiprocessing
import os
import signal
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from dmn_localization.learning.run_control import (signal_exit_code, StopRequest,
                                                   TrainingInterrupted)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
ORPHAN_WAIT_S = 2.0  # how long a worker signalled outside a stop waits for its parent to end
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

# in a worker: the parent's flag, set when it stops (no further run is taken); whether
# a call is running that no signal has ended yet (a stop then ends it; an idle worker
# waits for the pool's shutdown); and whether it waits for its parent to end
_stopping: Optional[Any] = None
_in_call = False
_waiting = False


class PoolStopped(Exception):
    """A signal stopped the pool; its runs saved their state and the same command resumes."""

    def __init__(self, signal_name: str, runs: List[str]) -> None:
        said = ''.join(f'\n  {run}' for run in runs) or ' (no run was training)'
        super().__init__(f'stopped by {signal_name}; every run saved its state and the same '
                         f'command goes on:{said}')
        self.signal_name = signal_name
        self.runs = runs

    @property
    def exit_code(self) -> int:
        """Return the shell's status of a process a signal ended: 128 plus its number."""
        return signal_exit_code(self.signal_name)


def _die_with_parent() -> None:
    """Have the kernel send this worker SIGTERM when its parent dies (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: an orphaned worker finishes its run
        return
    _exit_if_orphaned()  # the parent died before the request was in place


def _on_worker_signal(signum: int, frame: Any) -> None:
    """
    End the running call (KeyboardInterrupt); an idle worker ignores it unless orphaned.

    In training the trainer's own handler replaces this one and saves the step. An idle
    worker must not exit on its own: the executor would take the pool for broken and
    kill the workers still training, a second signal to each. An idle worker whose
    parent is gone exits: no call will come. A call is ended once: the signals after
    the first find the worker ending it, as idle, and a wait for the parent in progress
    (:func:`_exit_if_orphaned`) makes them return at once.
    """
    global _in_call
    if _in_call:
        _in_call = False
        raise KeyboardInterrupt
    if not _waiting:
        _exit_if_orphaned(_orphan_wait())


def _parent_stopping() -> bool:
    """Return whether the parent has begun its stop (a lock-free read: signal-safe)."""
    return _stopping is not None and bool(_stopping.value)


def _orphan_wait() -> float:
    """Return how long to wait for the parent to end after a signal: 0 in its stop."""
    return 0.0 if _stopping is None or _parent_stopping() else ORPHAN_WAIT_S


def _exit_if_orphaned(wait_s: float = 0.0) -> None:
    """Exit a worker whose parent has ended, or ends within ``wait_s`` seconds."""
    global _waiting
    parent = multiprocessing.parent_process()
    if parent is None:  # not a spawned worker
        return
    _waiting = True
    try:
        parent.join(wait_s)  # the parent's pipe, closed once its last thread has ended
    finally:
        _waiting = False
    if not parent.is_alive():
        os._exit(128 + int(signal.SIGTERM))


def _init_worker(stopping: Any) -> None:
    """Start a worker: signals from its parent only, ended calls instead of exits."""
    global _stopping
    _stopping = stopping
    os.setpgrp()
    for signum in SIGNALS:
        signal.signal(signum, _on_worker_signal)
    _die_with_parent()


def _unless_stopping(fn: Callable[..., Any], args: Tuple[Any, ...]) -> Tuple[bool, Any]:
    """Return ``(True, fn(*args))``, or ``(False, None)`` once the parent is stopping."""
    global _in_call
    _in_call = True  # before the check: a stop after it ends the call, one before is seen
    wait_s = 0.0
    try:
        if _parent_stopping():
            return False, None
        return True, fn(*args)
    except KeyboardInterrupt:
        wait_s = _orphan_wait()  # a signal ended the call: the parent's, or the kernel's
        if _parent_stopping():
            return False, None  # outside training (an evaluation, say): redone on resume
        raise
    except TrainingInterrupted:
        wait_s = _orphan_wait()  # the same, in training: the run saved its step
        raise
    finally:
        _in_call = False
        _exit_if_orphaned(wait_s)  # nobody to take the result: the run saved its state


class RunPool:
    """
    ``jobs`` worker processes (spawned) and the signal handling described above.

    Use as a context manager in the main thread; :meth:`submit` the calls, then read
    :meth:`ended` until :attr:`busy` is false.
    """

    def __init__(self, jobs: int) -> None:
        context = multiprocessing.get_context('spawn')
        self._stopping = context.RawValue(ctypes.c_bool, False)  # read in signal handlers
        self._executor = ProcessPoolExecutor(jobs, mp_context=context,
                                             initializer=_init_worker,
                                             initargs=(self._stopping,))
        self._pending: Set[Future] = set()
        self._previous: Dict[int, Any] = {}
        self._stop = StopRequest()
        self.stopped_runs: List[str] = []  # what each run said when a signal stopped it

    def __enter__(self) -> RunPool:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, background
                    self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        try:
            self._executor.shutdown(wait=True, cancel_futures=True)
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        if kind is None and self.signum:
            raise PoolStopped(signal.Signals(self.signum).name, self.stopped_runs)

    @property
    def signum(self) -> int:
        """Return the signal that stopped the pool, ``0`` while none did."""
        return self._stop.signum

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.signum
        again = self._stop.record(signum)
        if not (first or again):
            return  # the first one's copy: the workers are stopping already
        self._stopping.value = True
        for future in self._pending:
            future.cancel()  # those not yet handed to a worker
        for child in multiprocessing.active_children():  # the pool's workers
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if again:
            raise KeyboardInterrupt

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have a worker call ``fn(*args)`` (picklable) unless the pool stops first."""
        if not self.signum:
            self._pending.add(self._executor.submit(_unless_stopping, fn, args))

    @property
    def busy(self) -> bool:
        """Return whether a call is still running or waiting for a worker."""
        return bool(self._pending)

    def ended(self, timeout: float) -> Iterator[Any]:
        """
        Yield the results of the calls that end within ``timeout`` seconds.

        Calls a stop cancelled, kept from starting or ended outside training yield
        nothing; a run it stopped in training (:class:`.run_control.TrainingInterrupted`)
        adds its message to :attr:`stopped_runs`. Any other error is raised.
        """
        done, self._pending = wait(self._pending, timeout=timeout,
                                   return_when=FIRST_COMPLETED)
        for future in done:
            if future.cancelled():
                continue
            try:
                started, result = future.result()
            except TrainingInterrupted as exc:
                self.stopped_runs.append(str(exc))
                continue
            if started:
                yield result
