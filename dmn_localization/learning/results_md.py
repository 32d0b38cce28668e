"""
RESULTS.md is written in sections by several commands, each replacing only its own.

A section is the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; a
command that writes a section keeps every other section (and any text between them)
as it was, so ``make results`` and the kidnap benchmark can run in any order.
"""

from __future__ import annotations

from pathlib import Path
import re

from dmn_localization.core.atomic_write import write_text_atomic

TITLE = '# Results\n'


def write_section(path: Path, name: str, text: str) -> Path:
    """Replace (or append) section ``name`` of the Markdown file ``path`` with ``text``."""
    if not re.fullmatch(r'[a-z0-9-]+', name):
        raise ValueError(f'section names are lower-case words with dashes, got {name!r}')
    path = Path(path)
    old = path.read_text() if path.exists() else TITLE
    block = f'<!-- begin {name} -->\n{text.rstrip()}\n<!-- end {name} -->'
    pattern = re.compile(rf'<!-- begin {name} -->\n.*?<!-- end {name} -->', re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old, count=1)
    else:
        new = old.rstrip() + '\n\n' + block + '\n'
    return write_text_atomic(path, new if new.endswith('\n') else new + '\n')
