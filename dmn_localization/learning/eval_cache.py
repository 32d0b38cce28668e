"""
Test-set results kept beside the run they measure, so a table is not measured twice.

``dmn_results`` evaluates every finished run on 1000 test episodes per protocol at
K=2048 each time it writes RESULTS.md; a run's numbers do not change unless its
checkpoint, the test data or the evaluation does. :func:`cached_evaluate` stores them
in a JSON file with a key of everything they depend on: the checkpoint's SHA-256, the
test set's manifest (which holds the SHA-256 of every data file), the episodes, seed,
protocols, frame change, torch version and :data:`EVAL_VERSION`. A file whose key
differs is measured again and replaced. Each model is evaluated with its own generator
(:func:`~dmn_localization.learning.evaluation.evaluate`), so its numbers do not depend
on which models are evaluated beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from dmn_localization.data.dataset import Dataset, file_sha256, save_json
import torch

#: Bump when the evaluation's numbers would change for the same inputs (protocols,
#: success criteria, filter): every cached result is then measured again.
EVAL_VERSION = 1

Results = Dict[str, Dict[str, float]]  # protocol -> summary (evaluation.summarize)


def cache_key(checkpoint: Optional[Path], model: str, dataset: Dataset, episodes: int,
              seed: int, protocols: List[str], frame_shift: float,
              frame_turn: float) -> Dict[str, Any]:
    """Return everything a model's test results depend on (``checkpoint`` None: non-learned)."""
    return {'eval_version': EVAL_VERSION, 'model': model,
            'checkpoint_sha256': None if checkpoint is None else file_sha256(checkpoint),
            'test_manifest_sha256': file_sha256(Path(dataset.root) / 'manifest.json'),
            'episodes': episodes, 'seed': seed, 'protocols': sorted(protocols),
            'frame_shift': frame_shift, 'frame_turn': frame_turn,
            'torch': torch.__version__}


def cached_evaluate(path: Path, key: Dict[str, Any], measure: Callable[[], Results],
                    fresh: bool = False) -> Results:
    """
    Return the results stored at ``path`` under ``key``, else ``measure()`` them and store.

    ``fresh``: measure again whatever is stored.
    """
    if not fresh and path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}  # a torn or foreign file: measure again
        if stored.get('key') == key:
            return stored['results']
    results = measure()
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. --runs on a machine without it
    save_json(path, {'key': key, 'results': results})
    return results
