"""
What trained a run: the git revision of the package's code, and the machine.

A run records the revision of every process that trained it (a run stops and resumes,
and the code may change in between), its best checkpoint carries the list,
and a model card prints it: weights should come only from committed code, and a
revision ending in ``-dirty`` says they did not. The machine of every process is kept
the same way (:func:`machine`): a run's wall time depends on it, and a CPU whose kernels
round differently would take a run down another path (as the memory layout does).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
import platform
import subprocess
from typing import List, Optional, Sequence

#: The list of a run saved before revisions were recorded starts with this.
UNRECORDED = 'unrecorded'


def code_revision(path: Optional[Path] = None) -> str:
    """
    Return the git revision of the code in directory ``path`` (default: this package).

    For this package the answer is read once per process (:func:`_loaded_revision`): the
    code a process runs is the code it imported, however the tree moves on later (a
    ``dmn_results`` worker trains many runs with the code it started with).

    ``git describe --always`` of the tree holding it, with ``-dirty`` when a file under
    ``path`` differs from that revision (changed, or new and not ignored). Files elsewhere
    in the tree (README, RESULTS.md, run records) do not make the code dirty: they are
    edited while runs train. ``unknown`` when the code is not in a git working tree (an
    installed copy) or git is missing.
    """
    if path is None:
        return _loaded_revision()
    where = Path(path)

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(['git', '-C', str(where), *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git('describe', '--always', '--abbrev=12')
    changed = git('status', '--porcelain', '--', '.')
    if not revision or changed is None:
        return 'unknown'
    return revision + ('-dirty' if changed else '')


@functools.lru_cache(maxsize=None)
def _loaded_revision() -> str:
    """Return :func:`code_revision` of this package when first asked in this process."""
    return code_revision(Path(__file__).resolve().parents[1])


def machine() -> str:
    """
    Return this machine as a run records it: CPU model, vector unit, cores, architecture.

    E.g. ``'AMD EPYC, AVX2, 2 cores, x86_64'``; the vector unit is the one PyTorch's CPU
    kernels use (``torch.backends.cpu.get_cpu_capability``).
    """
    import torch

    name = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            name = next((line.split(':', 1)[1].strip() for line in f
                         if line.startswith('model name')), name)
    except OSError:
        pass
    return (f'{name}, {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, '
            f'{platform.machine()}')


def add_revision(revisions: Optional[Sequence[str]], revision: str) -> List[str]:
    """
    Return the revisions of a run after a training process with ``revision``.

    ``revisions`` is None for a run saved before they were recorded (the list then starts
    with :data:`UNRECORDED`); a revision equal to the last is not repeated.
    """
    known = [UNRECORDED] if revisions is None else list(revisions)
    return known if known and known[-1] == revision else known + [revision]
