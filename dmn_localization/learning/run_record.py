"""
What survives of a training run without its directory: a small JSON record.

A run's directory (``last.pt``, ``best.pt``, ``log.csv``, ``test-eval.json``) holds
megabytes of weights and optimizer state and lives under ``runs/``, which is not
committed: a new machine starts without it, and a results table that takes days would
lose every finished run with it. :func:`write_record` keeps the part the table is made
of, a few kilobytes a run, in a directory that is committed with RESULTS.md
(``dmn_results --records``, default ``results/``): the training identity and counters,
the validation curve, the memory layout, code revisions and machines, and the test results with
their key (:mod:`.eval_cache`). The results plan reads a run from its directory while it
has one, else from its record (:func:`read_record`): a finished run is not trained
again, and the learning-rate search is decided, the runs table and curves are drawn and
the test results are reported from the records alone.

Only runs at rest are recorded: trained to the budget they were given, or stopped early.
A run lost while training starts again from its beginning (its record, if any, is the
last budget it finished).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dmn_localization.data.dataset import save_json
from dmn_localization.learning.trainer import load_state

#: Bump when the record's fields change meaning; a record of another version is refused
#: (:class:`RecordError`).
RECORD_VERSION = 1

Curve = List[Tuple[int, float, float]]  # (samples, validation loss, validation success)


class RecordError(ValueError):
    """A record file that cannot be read as a run record."""


def record_path(records: Path, run: Path) -> Path:
    """Return the record of run directory ``run`` in ``records`` (named after the run)."""
    return Path(records) / f'{Path(run).name}.json'


def read_curve(run: Path) -> Curve:
    """
    Return ``(samples, validation loss, validation global success)`` of a run's log.csv.

    Empty when the run has not validated yet.
    """
    if not (Path(run) / 'log.csv').exists():
        return []
    with open(Path(run) / 'log.csv', newline='') as f:
        return [(int(r['samples']), float(r['val_loss']), float(r['val_global_success']))
                for r in csv.DictReader(f) if r['val_global_success']]


def at_rest(counters: Dict[str, Any], budget_samples: int, finish_samples: int = 0) -> bool:
    """
    Return whether a run with ``counters`` is over: its ``best.pt`` is final.

    It has spent ``budget_samples`` or stopped early, and then, with ``finish_samples``,
    also spent those or stopped early in its finishing stage (``dmn_train
    --finish-samples``).
    """
    if not finish_samples:
        return counters['samples'] >= budget_samples or bool(counters['stopped_early'])
    return counters.get('stage', 0) == 1 and (
        counters['samples'] >= counters['finish_start'] + finish_samples
        or bool(counters['stopped_early']))


def write_record(run: Path, records: Path) -> Optional[Path]:
    """
    Record run directory ``run`` in ``records`` if it is at rest; return the record's path.

    None (nothing written) while the run has no saved state or is still short of the
    budget, or of the finishing stage, in its ``config.json``. The test results
    (``test-eval.json``) go in when the run has them. The file is replaced atomically.
    """
    run = Path(run)
    state = load_state(run)
    if state is None or not (run / 'config.json').exists():
        return None
    config = json.loads((run / 'config.json').read_text())
    budget = int(config['budget_samples'])
    counters = dict(state['counters'])
    if not at_rest(counters, budget, int(config.get('finish_samples', 0))):
        return None
    test_eval = None
    if (run / 'test-eval.json').exists():
        try:
            test_eval = json.loads((run / 'test-eval.json').read_text())
        except ValueError:
            test_eval = None
    path = record_path(records, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, {
        'version': RECORD_VERSION, 'run': run.name, 'budget_samples': budget,
        'finish_samples': int(config.get('finish_samples', 0)),
        'config': state['config'], 'counters': counters,
        'memory_format': state.get('memory_format'),
        'code_revisions': state.get('code_revisions'), 'machines': state.get('machines'),
        'curve': [list(row) for row in read_curve(run)], 'test_eval': test_eval})
    return path


def read_record(records: Optional[Path], run: Path) -> Optional[Dict[str, Any]]:
    """
    Return the record of run directory ``run`` in ``records``; None if there is none.

    Raises RecordError for a file that is not a record of this version (a torn or
    foreign file should not pass for a missing run).
    """
    if records is None:
        return None
    path = record_path(records, run)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise RecordError(f'{path}: not JSON ({exc})') from exc
    if not isinstance(record, dict) or record.get('version') != RECORD_VERSION:
        raise RecordError(f'{path}: not a run record of version {RECORD_VERSION}')
    record['curve'] = [(int(s), float(loss), float(success))
                       for s, loss, success in record['curve']]
    return record
