"""Files replaced whole (``core.atomic_write``): old or new content, never a part."""

import os
from pathlib import Path

from dmn_localization.core.atomic_write import write_atomic, write_text_atomic
import pytest


def test_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / 'record.json'
    path.write_text('old\n')
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert path.read_text() == 'old\n'  # the old file stays readable while writing
        tmp.write_text('new\n')

    assert write_atomic(path, write) == path
    assert path.read_text() == 'new\n'
    # written beside the file (same directory: the rename cannot cross file systems), under
    # a name of this process, so another process writing the same file uses another one
    assert seen[0].parent == tmp_path and str(os.getpid()) in seen[0].name
    assert sorted(p.name for p in tmp_path.iterdir()) == ['record.json']


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / 'last.pt'
    path.write_bytes(b'complete')

    def write(tmp: Path) -> None:
        tmp.write_bytes(b'half')
        raise KeyboardInterrupt  # the process stopped mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, write)
    assert path.read_bytes() == b'complete'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pt']


def test_text_creates_a_new_file(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / 'a.md', 'text\n')
    assert path.read_text() == 'text\n'
