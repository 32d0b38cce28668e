"""
``dmn_train``: train a model by name on a dataset from ``dmn_dataset``.

    dmn_train --model dmn-pf --train data/rooms-train --val data/rooms-val \
        --out runs/dmn-pf-rooms-s0 --budget-samples 2000000 --lr 1e-3 --seed 0

Runs resume by running the same command again. Data-parallel on several processes:
``torchrun --nproc_per_node 2 -m dmn_localization.learning.train_cli ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from dmn_localization.core.models import LEARNED_MODELS
from dmn_localization.data.dataset import DatasetError
from dmn_localization.learning.trainer import train, TrainConfig, TrainingError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``dmn_train``."""
    defaults = TrainConfig('dmn-pf', '', '', '')
    p = argparse.ArgumentParser(prog='dmn_train', description=__doc__.split('\n\n')[0])
    p.add_argument('--model', choices=list(LEARNED_MODELS), required=True)
    p.add_argument('--train', required=True, help='training dataset directory')
    p.add_argument('--val', required=True, help='validation dataset directory')
    p.add_argument('--out', required=True, help='run directory (resumed when it exists)')
    p.add_argument('--budget-samples', type=int, default=defaults.budget_samples)
    p.add_argument('--batch-size', type=int, default=defaults.batch_size)
    p.add_argument('--lr', type=float, default=defaults.lr)
    p.add_argument('--contexts', type=int, default=defaults.num_contexts)
    p.add_argument('--particles', type=int, default=defaults.num_particles)
    p.add_argument('--uniform-share', type=float, default=defaults.uniform_share,
                   help='share of the training particles drawn uniformly over the map '
                   "(0: the paper's pure tracking belief)")
    p.add_argument('--nce-weight', type=float, default=defaults.nce_weight,
                   help='weight of the contrastive term (particle filter models; 0: the '
                   "paper's pose loss alone)")
    p.add_argument('--val-every-samples', type=int, default=defaults.val_every_samples)
    p.add_argument('--val-episodes', type=int, default=defaults.val_episodes)
    p.add_argument('--patience', type=int, default=defaults.patience,
                   help='stop after this many validations without improvement')
    p.add_argument('--checkpoint-minutes', type=float, default=defaults.checkpoint_minutes)
    p.add_argument('--seed', type=int, default=defaults.seed)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_train``."""
    a = build_parser().parse_args(argv)
    config = TrainConfig(a.model, a.train, a.val, a.out, a.budget_samples, a.batch_size, a.lr,
                         a.contexts, a.particles, a.val_every_samples, a.val_episodes,
                         patience=a.patience, checkpoint_minutes=a.checkpoint_minutes,
                         seed=a.seed, device=a.device, uniform_share=a.uniform_share,
                         nce_weight=a.nce_weight)
    try:
        summary = train(config, progress=not a.quiet)
    except (TrainingError, DatasetError, ValueError) as exc:
        print(f'dmn_train: error: {exc}', file=sys.stderr)
        return 2
    print(f'{a.out}: {summary["samples"]:,} samples, {summary["step"]:,} steps, best val loss '
          f'{summary["best_val_loss"]:.4f}' + (' (stopped early)' if summary['stopped_early']
                                               else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
