"""
Which code trained a run: the git revision of the package's working tree.

A run records the revision of every sitting that trained it (a run resumes across
sessions, and the code may change between them), its best checkpoint carries the list,
and a model card prints it: weights should come only from committed code, and a
revision ending in ``-dirty`` says they did not.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
from typing import List, Optional, Sequence

#: The list of a run saved before revisions were recorded starts with this.
UNRECORDED = 'unrecorded'


def code_revision(path: Optional[Path] = None) -> str:
    """
    Return the git revision of the code in directory ``path`` (default: this package).

    ``git describe --always`` of the tree holding it, with ``-dirty`` when a file under
    ``path`` differs from that revision (changed, or new and not ignored). Files elsewhere
    in the tree (README, RESULTS.md, run records) do not make the code dirty: they are
    edited while runs train. ``unknown`` when the code is not in a git working tree (an
    installed copy) or git is missing.
    """
    where = Path(__file__).resolve().parents[1] if path is None else Path(path)

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


def add_revision(revisions: Optional[Sequence[str]], revision: str) -> List[str]:
    """
    Return the revisions of a run after a sitting with ``revision``.

    ``revisions`` is None for a run saved before they were recorded (the list then starts
    with :data:`UNRECORDED`); a revision equal to the last is not repeated.
    """
    known = [UNRECORDED] if revisions is None else list(revisions)
    return known if known and known[-1] == revision else known + [revision]
