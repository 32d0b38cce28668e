# Copyright 2026 dmn_localization developers
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ament_flake8 over the package's Python code, as ROS packages run it (99 columns)."""

from pathlib import Path

from ament_flake8.main import main_with_errors
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ['dmn_localization', 'test', 'launch', 'scripts', 'setup.py']


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, errors = main_with_errors(argv=CHECKED)
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
