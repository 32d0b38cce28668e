"""
What trained a run: the git revision of the package's code, and the machine.

A run records both for every process that trained it (a run stops and resumes); model
cards print the revisions: weights come only from committed code (no ``-dirty``).
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
    Return ``git describe --always`` of directory ``path``, ``-dirty`` if a file in it changed.

    Default: this package, read once per process (the code it imported); files
    elsewhere (RESULTS.md) do not count; ``unknown`` outside a git tree.
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
    """E.g. ``'AMD EPYC, AVX2, 2 cores, x86_64'``: CPU, PyTorch's vector unit, cores."""
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
    """Return the revisions of a run after a process with ``revision`` (None: unrecorded)."""
    known = [UNRECORDED] if revisions is None else list(revisions)
    return known if known and known[-1] == revision else known + [revision]
