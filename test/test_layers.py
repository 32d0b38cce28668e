"""The package's imports point one way (contracts in .importlinter, checked by import-linter)."""

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name('lint-imports')


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """Run lint-imports with the project's contracts on the package under ``source_root``."""
    return subprocess.run(
        [str(LINT_IMPORTS), '--config', str(ROOT / '.importlinter'), '--no-cache'],
        cwd=source_root, env={'PYTHONPATH': str(source_root), 'PATH': '/usr/bin:/bin'},
        capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layer_contracts():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '0 broken' in run.stdout


@pytest.mark.parametrize('module, wrong_import, contract', [
    ('core/geometry.py', 'from dmn_localization.runtime import status',
     'core imports nothing above it'),
    ('data/dataset.py', 'import dmn_localization.ros.parameters',
     'data never imports the node'),
    ('runtime/recovery.py', 'from dmn_localization.learning import trainer',
     'runtime runs without ROS'),
    ('runtime/status.py', 'import rclpy', 'runtime runs without ROS'),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, wrong_import, contract):
    copy = tmp_path / 'dmn_localization'
    shutil.copytree(ROOT / 'dmn_localization', copy,
                    ignore=shutil.ignore_patterns('__pycache__'))
    target = copy / module
    target.write_text(target.read_text() + f'\n\ndef _wrong():\n    {wrong_import}\n')
    run = lint_imports(tmp_path)
    assert run.returncode != 0, run.stdout
    broken = [line for line in run.stdout.splitlines() if line.endswith('BROKEN')]
    assert any(line.startswith(contract) for line in broken), run.stdout
