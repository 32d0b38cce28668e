"""
Files replaced whole: a reader sees the old content or the new, never a part of either.

Checkpoints, maps, run records, dataset shards and saved poses are all written this way,
so a process killed mid-write (a job stopped by its scheduler, a robot losing power)
leaves the last complete file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union


def write_atomic(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """
    Write ``path`` by calling ``write(tmp)`` on a file beside it, then renaming it over ``path``.

    The temporary name carries the process id, so two processes writing the same file
    (a training worker and a report recording the same run) never write into one
    temporary file. The bytes reach the disk before the rename. When ``write`` raises,
    the temporary file is removed and ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` with :func:`write_atomic`; returns ``path``."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))
