"""
``dmn_train``: train a model by name on a dataset from ``dmn_dataset``.

    dmn_train --model dmn-pf --train data/rooms-train --val data/rooms-val \
        --out runs/dmn-pf-rooms-s0 --budget-samples 2000000 --lr 1e-3 --seed 0

Runs resume by running the same command again. Data-parallel on several processes:
``torchrun --nproc_per_node 2 -m dmn_localization.learning.train_cli ...``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
import os
import sys
from typing import Any, Dict, List, Optional

from dmn_localization.core.allocator import keep_freed_memory
from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint
from dmn_localization.core.models import config_for, LEARNED_MODELS
from dmn_localization.data.dataset import DatasetError
from dmn_localization.learning.run_control import TrainingInterrupted
from dmn_localization.learning.train_config import (LR_SCHEDULES, MEMORY_FORMATS, PRECISIONS,
                                                    SELECTIONS, TrainConfig, TrainingError)
from dmn_localization.learning.trainer import train


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
    p.add_argument('--nce-near-share', type=float, default=defaults.nce_near_share,
                   help="share of the contrastive term's other poses drawn a little off the "
                   'truth (0.45-1.8 m in a 6 m room) with a similar heading, where a belief '
                   'settles when it is wrong by a little (0: all from the belief)')
    p.add_argument('--queries-per-map', type=int, default=defaults.queries_per_map, metavar='Q',
                   help='train on Q episodes of each map (each of --sequence-steps query '
                   "views), the map encoded once for them (1: the paper's one query; the "
                   'budget counts query views)')
    p.add_argument('--sequence-steps', type=int, default=defaults.sequence_steps, metavar='T',
                   help='train on episodes of T query views with the odometry between them, '
                   "the belief carried from step to step (1: the paper's one-step episodes; "
                   'the budget counts query views)')
    p.add_argument('--density-weight', type=float, default=defaults.density_weight,
                   metavar='W', help='add W times minus the log density of the true pose under '
                   'the updated belief (particle filter models; 0: the pose loss alone)')
    p.add_argument('--frame-shift', type=float, default=defaults.frame_shift, metavar='S',
                   help="move each episode's world by a random offset up to S normalized "
                   'units in x and y, so the extent is not the walls (0: in place)')
    p.add_argument('--frame-turn', type=float, default=defaults.frame_turn, metavar='DEG',
                   help="turn each episode's world about its centre by a random angle up to "
                   "DEG degrees, so the frame's axes are not the walls' (180: any; 0: as is)")
    p.add_argument('--model-option', action='append', default=[], metavar='FIELD=VALUE',
                   help='set a model config field, e.g. match_score=false (repeatable)')
    p.add_argument('--init-from', default='', metavar='CHECKPOINT',
                   help='start a new run from the weights of this checkpoint (same model; '
                   'its config options unless --model-option says otherwise; optimizer and '
                   'counters start afresh)')
    p.add_argument('--val-every-samples', type=int, default=defaults.val_every_samples)
    p.add_argument('--val-episodes', type=int, default=defaults.val_episodes)
    p.add_argument('--val-global-episodes', type=int, default=defaults.val_global_episodes,
                   help='validation episodes of one-step global localization (K=1024)')
    p.add_argument('--select-by', default=defaults.select_by, choices=SELECTIONS,
                   help='best.pt and early stopping by the lowest validation loss (tracking, '
                   'as trained) or the highest one-step global success on validation')
    p.add_argument('--lr-schedule', default=defaults.lr_schedule, choices=LR_SCHEDULES,
                   help="constant (the paper's) or cosine: from --lr down to --lr times "
                   '--lr-min-factor over the budget')
    p.add_argument('--lr-min-factor', type=float, default=defaults.lr_min_factor,
                   metavar='F', help='the cosine schedule ends at the rate times F')
    p.add_argument('--patience', type=int, default=defaults.patience,
                   help='stop after this many validations without improvement')
    p.add_argument('--lr-decay-factor', type=float, default=defaults.lr_decay_factor,
                   metavar='F', help='multiply the learning rate by F when the validation loss '
                   'has not improved for more than --lr-decay-patience validations in a row '
                   "(1: a constant rate, the paper's protocol)")
    p.add_argument('--lr-decay-patience', type=int, default=defaults.lr_decay_patience,
                   metavar='N', help='validations without improvement before the rate drops '
                   'at the next (with --lr-decay-factor below 1)')
    p.add_argument('--finish-samples', type=int, default=defaults.finish_samples, metavar='N',
                   help='after the budget (or an early stop), train N samples more from the '
                   'best checkpoint with a fresh Adam at the rate times --finish-lr-factor '
                   "(0: no finishing stage, the paper's protocol)")
    p.add_argument('--finish-lr-factor', type=float, default=defaults.finish_lr_factor,
                   metavar='F', help='learning rate of the finishing stage as a share of '
                   '--lr (default one third: 3e-4 -> 1e-4)')
    p.add_argument('--checkpoint-minutes', type=float, default=defaults.checkpoint_minutes)
    p.add_argument('--seed', type=int, default=defaults.seed)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--precision', default=defaults.precision, choices=PRECISIONS,
                   help="the training step's forward pass in float32 or under bfloat16 "
                   'autocast (about 1.3x faster at one thread on CPUs with AVX512-BF16; '
                   'validation and weights stay float32)')
    p.add_argument('--memory-format', default=defaults.memory_format,
                   choices=MEMORY_FORMATS,
                   help='memory layout of the weights: channels_last trains about 1.2x '
                   'faster on CPU with the same arithmetic up to rounding; a resumed run '
                   'keeps the layout it began with')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def parse_model_options(model: str, items: List[str]) -> Dict[str, Any]:
    """Turn ``['match_score=false', 'head_hidden=96']`` into typed config fields of ``model``."""
    defaults = config_for(model)
    options: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition('=')
        if not sep or not hasattr(defaults, key) or key == 'name':
            raise ValueError(f'--model-option {item!r}: expected FIELD=VALUE with a config '
                             f'field of {model}')
        kind = type(getattr(defaults, key))
        if kind is bool:
            if text.lower() not in ('true', 'false'):
                raise ValueError(f'--model-option {item!r}: {key} is true or false')
            options[key] = text.lower() == 'true'
        elif kind in (int, float):
            options[key] = kind(text)
        elif kind is tuple:  # e.g. pose_match_grid=4,8
            try:
                options[key] = tuple(int(v) for v in text.split(','))
            except ValueError:
                raise ValueError(f'--model-option {item!r}: {key} takes integers separated '
                                 'by commas') from None
            if len(options[key]) != len(getattr(defaults, key)):
                raise ValueError(f'--model-option {item!r}: {key} takes '
                                 f'{len(getattr(defaults, key))} integers')
        else:
            raise ValueError(f'--model-option {item!r}: {key} cannot be set from the command '
                             'line')
    return options


def options_of_checkpoint(model: str, path: str) -> Dict[str, Any]:
    """
    Return the config fields in which checkpoint ``path`` differs from ``model``'s defaults.

    With ``--init-from``, these are the model options the run starts with (an option given on
    the command line wins), so a checkpoint saved with other options (e.g. one from before
    ``match_score`` existed) continues without the options being repeated.
    """
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise ValueError(f'--init-from: {exc}') from exc
    if loaded.name != model:
        raise ValueError(f'--init-from {path} holds a {loaded.name} model, not {model}')
    theirs, defaults = loaded.model.config, config_for(model)
    # the image size comes from the training data, not from the checkpoint
    return {f.name: getattr(theirs, f.name) for f in fields(defaults)
            if isinstance(getattr(defaults, f.name), (bool, int, float, tuple))
            and f.name != 'image_size'
            and getattr(theirs, f.name) != getattr(defaults, f.name)}


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """
    Return the training run that parsed arguments ``a`` describe.

    Raises ValueError for a model option the model does not have.
    """
    options = parse_model_options(a.model, a.model_option)
    if a.init_from:
        options = {**options_of_checkpoint(a.model, a.init_from), **options}
    return TrainConfig(a.model, a.train, a.val, a.out, a.budget_samples, a.batch_size, a.lr,
                       a.contexts, a.particles, a.val_every_samples, a.val_episodes,
                       patience=a.patience, lr_decay_factor=a.lr_decay_factor,
                       lr_decay_patience=a.lr_decay_patience,
                       finish_samples=a.finish_samples, finish_lr_factor=a.finish_lr_factor,
                       checkpoint_minutes=a.checkpoint_minutes,
                       seed=a.seed, device=a.device, uniform_share=a.uniform_share,
                       nce_weight=a.nce_weight, nce_near_share=a.nce_near_share,
                       model_options=options, init_from=a.init_from,
                       frame_shift=a.frame_shift, frame_turn=a.frame_turn,
                       precision=a.precision, memory_format=a.memory_format,
                       val_global_episodes=a.val_global_episodes,
                       queries_per_map=a.queries_per_map, sequence_steps=a.sequence_steps,
                       density_weight=a.density_weight,
                       lr_schedule=a.lr_schedule, lr_min_factor=a.lr_min_factor,
                       select_by=a.select_by)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_train``."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        config = config_from_args(a)
    except ValueError as exc:
        parser.error(str(exc))
    keep_freed_memory()  # the validation's batched global episodes: see core/allocator.py
    try:
        summary = train(config, progress=not a.quiet)
    except TrainingInterrupted as exc:
        print(f'dmn_train: {exc}', file=sys.stderr)
        return exc.exit_code
    except (TrainingError, DatasetError, ValueError) as exc:
        print(f'dmn_train: error: {exc}', file=sys.stderr)
        return 2
    print(f'{a.out}: {summary["samples"]:,} samples, {summary["step"]:,} steps, best val loss '
          f'{summary["best_val_loss"]:.4f}' + (' (stopped early)' if summary['stopped_early']
                                               else '')
          + (f', learning rate now {summary["lr"]:.3g}' if summary['lr'] != config.lr
             else ''))
    if argv is None and int(os.environ.get('WORLD_SIZE', '1')) > 1:
        # a process of torchrun, its run saved and its process group destroyed: leave
        # without the interpreter's teardown, in which gloo's threads still aborted a
        # process now and then ("terminate called without an active exception", seen
        # under load), failing a run that had finished
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == '__main__':
    sys.exit(main())
