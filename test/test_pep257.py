# Copyright 2026 dmn_localization developers
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ament_pep257 docstring checks over the package's Python code."""

from pathlib import Path

from ament_pep257.main import main
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ['dmn_localization', 'test', 'launch', 'scripts', 'setup.py']


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(monkeypatch):
    monkeypatch.chdir(ROOT)
    rc = main(argv=CHECKED)
    assert rc == 0, 'Found code style errors / warnings'
