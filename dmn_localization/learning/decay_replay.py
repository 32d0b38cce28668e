"""
Replay ``dmn_train``'s learning-rate decay on plateau over recorded validation curves.

    python -m dmn_localization.learning.decay_replay --records results \
        --lr-decay-patience 2 --budget-samples 1000000

For every run recorded in ``--records`` (:mod:`.run_record`) it prints the samples at
which a run with ``--lr-decay-factor`` below 1 and this patience would have dropped its
rate, had its validation curve been the recorded one (the trainer's own scheduler,
:func:`.train_config.plateau_scheduler`, is fed the curve). The first drop is exact: up to it
the decaying run is the recorded run. After it the curve would differ, so later drops
only say that the recorded curve stayed flat. It answers a question a plan must settle
before it trains: at this budget, would a decay on plateau fire at all?
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import List, Optional, Sequence, Tuple

from dmn_localization.learning.run_record import Curve, read_record, RecordError
from dmn_localization.learning.train_config import (check_lr_decay, plateau_scheduler, TrainConfig,
                                                    TrainingError)
import torch


def plateau_drops(curve: Curve, patience: int, budget_samples: int,
                  val_every_samples: int) -> List[int]:
    """
    Return the samples at which the rate would drop over ``curve`` (up to the budget).

    Only validations on the ``val_every_samples`` grid count, as in the trainer.
    """
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = plateau_scheduler(optimizer, TrainConfig(
        '', '', '', '', lr_decay_factor=0.5, lr_decay_patience=patience))
    assert scheduler is not None
    drops = []
    for samples, loss, _ in curve:
        if samples > budget_samples:
            break
        if samples % val_every_samples:
            continue
        before = optimizer.param_groups[0]['lr']
        scheduler.step(loss)
        if optimizer.param_groups[0]['lr'] != before:
            drops.append(samples)
    return drops


def replay(records: Path, patience: int, budget_samples: int
           ) -> List[Tuple[str, List[int]]]:
    """Return ``(run, drops)`` for every run record in ``records``, sorted by run name."""
    rows = []
    for path in sorted(Path(records).glob('*.json')):
        try:
            record = read_record(records, Path(path.stem))
        except RecordError:
            continue  # not a run record (an evaluation of a non-learned baseline, say)
        assert record is not None
        rows.append((record['run'], plateau_drops(
            record['curve'], patience, budget_samples,
            int(record['config']['val_every_samples']))))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--records', type=Path, default=Path('results'))
    p.add_argument('--lr-decay-patience', type=int,
                   default=TrainConfig.lr_decay_patience, metavar='N')
    p.add_argument('--budget-samples', type=int, default=1_000_000)
    a = p.parse_args(argv)
    try:
        check_lr_decay(1.0, a.lr_decay_patience)
    except TrainingError as exc:
        p.error(str(exc))
    rows = replay(a.records, a.lr_decay_patience, a.budget_samples)
    if not rows:
        print(f'{a.records}: no run records', file=sys.stderr)
        return 1
    print(f'| run | drops (samples), patience {a.lr_decay_patience}, up to '
          f'{a.budget_samples:,} |\n| --- | --- |')
    for run, drops in rows:
        print(f'| {run} | {", ".join(f"{d:,}" for d in drops) or "none"} |')
    fired = sum(bool(drops) for _, drops in rows)
    print(f'\nThe rate would drop in {fired} of {len(rows)} runs.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
