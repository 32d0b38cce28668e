"""
Export the final weights of a training run as a checkpoint beside its ``best.pt``.

``best.pt`` is the checkpoint the run's selection rule chose (``--select-by``); the final
weights, at the end of the budget, live only in the training state ``last.pt``. To
compare both on validation data (``dmn_evaluate --data VAL --checkpoint RUN/best.pt
RUN/final.pt``) and ship the better one, write them as a checkpoint::

    python -m dmn_localization.learning.final_weights RUN [--out RUN/final.pt]

The checkpoint's metadata is ``best.pt``'s with the counters and the last validation of
the run's end (``log.csv``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
import sys
from typing import List, Optional

from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dmn_localization.learning.trainer import load_state


def export_final_weights(run: Path, out: Path) -> Path:
    """Write the final weights of ``run`` (its ``last.pt``) as a checkpoint at ``out``."""
    run = Path(run)
    state = load_state(run)
    if state is None:
        raise CheckpointError(f'{run}: no last.pt (not a training run, or never saved)')
    best = load_checkpoint(run / 'best.pt')
    best.model.load_state_dict(state['model'])
    metadata = dict(best.metadata)
    counters = state['counters']
    metadata.update(samples=counters['samples'], step=counters['step'], final_weights=True)
    with open(run / 'log.csv', newline='') as f:
        validations = [r for r in csv.DictReader(f) if r.get('val_loss')]
    if validations and int(validations[-1]['samples']) == counters['samples']:
        metadata.update(val_loss=float(validations[-1]['val_loss']),
                        val_global_success=float(validations[-1]['val_global_success']))
    save_checkpoint(out, best.model, best.extent, metadata)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('run', type=Path, help='run directory of dmn_train')
    p.add_argument('--out', type=Path, default=None, help='default: RUN/final.pt')
    a = p.parse_args(argv)
    try:
        path = export_final_weights(a.run, a.out or a.run / 'final.pt')
    except (CheckpointError, FileNotFoundError) as exc:
        print(f'final_weights: error: {exc}', file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
