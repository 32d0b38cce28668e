"""
The configuration of a training run and the checks and schedules it implies.

:class:`TrainConfig` is everything that determines a run; the checks refuse settings
that cannot run before a run directory is touched; :func:`scheduled_lr` and
:func:`plateau_scheduler` are the learning-rate schedules; :func:`finish_text` and
:func:`schedule_text` say them in words for model cards and RESULTS.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Any, Dict, Optional

import torch

#: Values of ``TrainConfig.precision``.
PRECISIONS = ('fp32', 'bf16')
#: Values of ``TrainConfig.lr_schedule`` and ``TrainConfig.select_by``.
LR_SCHEDULES = ('constant', 'cosine')
SELECTIONS = ('val_loss', 'global_success')
#: Values of ``TrainConfig.memory_format``; a run saved before the field existed trained
#: in the first.
MEMORY_FORMATS = ('contiguous', 'channels_last')
#: Success threshold of the paper: squared x-y error in normalized units below 0.2.
SUCCESS_THRESHOLD = 0.2
#: A stricter reading, reported beside it: x-y distance below 0.2 (squared error below
#: 0.04). Under it our Rooms floors (uninformed, closest context) match the paper's.
STRICT_SUCCESS_THRESHOLD = 0.04


class TrainingError(RuntimeError):
    """A run directory that cannot be used (e.g. it holds a run of another configuration)."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (``budget_samples`` may grow on resume)."""

    model: str
    train_data: str
    val_data: str
    out: str
    budget_samples: int = 1_000_000
    batch_size: int = 16
    lr: float = 1e-3
    num_contexts: int = 4
    num_particles: int = 32
    val_every_samples: int = 50_000
    val_episodes: int = 1000
    val_global_episodes: int = 200
    patience: int = 5
    #: the learning rate is multiplied by this when the validation loss has not improved
    #: for more than ``lr_decay_patience`` validations in a row (``ReduceLROnPlateau``);
    #: 1: constant, the paper's protocol
    lr_decay_factor: float = 1.0
    #: validations without improvement tolerated before the rate drops (the drop comes at
    #: the next; counted afresh after each drop)
    lr_decay_patience: int = 2
    #: samples of a finishing stage after ``budget_samples`` (or an early stop): from the
    #: weights of ``best.pt``, a fresh Adam at ``lr * finish_lr_factor``, early stopping
    #: counted afresh; ``best.pt`` stays the lowest validation loss of both stages. 0: no
    #: such stage (the paper's protocol). Like the budget it may grow on resume, and a run
    #: that has spent its budget without one may be given one; its rate is fixed once the
    #: stage has begun.
    finish_samples: int = 0
    finish_lr_factor: float = 1.0 / 3.0
    checkpoint_minutes: float = 10.0
    seed: int = 0
    device: str = 'auto'
    #: share of training particles drawn uniformly over the map (see ``tracking_belief``)
    uniform_share: float = 0.25
    #: weight of the contrastive term of particle filter models (``EpisodeLoss.contrastive``)
    nce_weight: float = 0.0
    #: share of the contrastive term's other poses drawn a little off the truth, heading
    #: within about 30 degrees (``episode_loss.near_poses``; 0: all from the belief)
    nce_near_share: float = 0.0
    #: model config fields other than their defaults, e.g. ``{'match_score': False}``
    model_options: Dict[str, Any] = field(default_factory=dict)
    #: checkpoint whose weights a new run starts from (optimizer and counters start afresh)
    init_from: str = ''
    #: each episode's world moved by a random offset up to this (normalized units) in x
    #: and y, so the extent does not say where the walls are (``batches.with_frame_change``)
    frame_shift: float = 0.0
    #: each episode's world turned about its centre by a random angle up to this (degrees;
    #: 180: any), so the frame's axes do not say which way the walls run
    frame_turn: float = 0.0
    #: arithmetic of the training step's forward pass: ``'fp32'``, or ``'bf16'`` (bfloat16
    #: autocast: about 1.3x faster at one thread on CPUs with AVX512-BF16, ``make bench``;
    #: weights, optimizer and validation stay float32)
    precision: str = 'fp32'
    #: memory layout of the weights (and so of the convolutions): ``'channels_last'``
    #: trains about 1.2x faster on CPU (``make bench``) with the same arithmetic up to
    #: rounding. Like ``device``, not part of a run's identity; a run keeps the layout
    #: it began with, so it resumes exactly.
    memory_format: str = 'channels_last'
    #: episodes trained on per map (each of ``sequence_steps`` query views), the map
    #: encoded once for all of them (1: the paper's one query per map). ``budget_samples``
    #: counts query views.
    queries_per_map: int = 1
    #: steps of each training episode: query views seen one after the other with the
    #: odometry between them, the belief carried (and resampled) from step to step; the
    #: loss averages the steps (1: the paper's one-step episodes). A map holds
    #: ``queries_per_map`` such episodes, so it needs ``num_contexts + queries_per_map *
    #: sequence_steps`` views
    sequence_steps: int = 1
    #: weight of the belief-density term: minus the log density of the true pose under the
    #: updated belief read as a Gaussian mixture (:func:`~dmn_localization.core.losses.
    #: belief_nll`); it rewards weight on particles near the truth wherever they are, which
    #: the pose loss of the weighted mean does not (0: the paper's pose loss alone)
    density_weight: float = 0.0
    #: ``'constant'`` (the paper's), or ``'cosine'``: from ``lr`` down to ``lr *
    #: lr_min_factor`` over ``budget_samples`` along half a cosine (set at each step from
    #: the samples so far, so a stopped run resumes exactly; a larger budget on resume
    #: stretches the rest of the schedule)
    lr_schedule: str = 'constant'
    lr_min_factor: float = 0.05
    #: which checkpoint is ``best.pt`` (and what early stopping counts): the lowest
    #: ``'val_loss'`` (tracking, as trained), or the highest ``'global_success'`` (one-step
    #: global localization on the validation episodes, K=1024)
    select_by: str = 'val_loss'

    def identity(self) -> Dict[str, Any]:
        """Return the fields a resumed run must share with the saved one."""
        data = asdict(self)
        for key in ('budget_samples', 'finish_samples', 'finish_lr_factor', 'checkpoint_minutes',
                    'device', 'out', 'memory_format'):
            data.pop(key)
        return data


def check_lr_decay(factor: float, patience: int) -> None:
    """Raise TrainingError for a decay factor outside (0, 1] or a negative patience."""
    if not 0.0 < factor <= 1.0:
        raise TrainingError(f'the learning-rate decay factor must be in (0, 1], got {factor}')
    if patience < 0:
        raise TrainingError(f'the learning-rate decay patience must be >= 0, got {patience}')


def check_finish(samples: int, factor: float, lr_decay_factor: float) -> None:
    """Raise TrainingError for a finishing stage (:class:`TrainConfig`) that cannot run."""
    if samples < 0:
        raise TrainingError(f'the finishing stage needs samples >= 0, got {samples}')
    if not 0.0 < factor <= 1.0:
        raise TrainingError(f'the finishing learning-rate factor must be in (0, 1], got {factor}')
    if samples and lr_decay_factor != 1.0:
        raise TrainingError('a finishing stage and a decay on plateau are two schedules: '
                            'choose one (--finish-samples or --lr-decay-factor)')


def check_schedule(config: TrainConfig) -> None:
    """Raise TrainingError for a rate schedule, selection or query count that cannot run."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise TrainingError(f'the learning-rate schedule must be one of {LR_SCHEDULES}, got '
                            f'{config.lr_schedule!r}')
    if config.select_by not in SELECTIONS:
        raise TrainingError(f'the checkpoint selection must be one of {SELECTIONS}, got '
                            f'{config.select_by!r}')
    if config.lr_schedule == 'cosine' and (config.lr_decay_factor != 1.0
                                           or config.finish_samples):
        raise TrainingError('the cosine schedule is a schedule of its own: it combines with '
                            'neither --lr-decay-factor nor --finish-samples')
    if not 0.0 <= config.lr_min_factor <= 1.0:
        raise TrainingError(f'the final learning-rate factor must be in [0, 1], got '
                            f'{config.lr_min_factor}')
    if config.queries_per_map < 1:
        raise TrainingError(f'queries per map must be >= 1, got {config.queries_per_map}')
    if config.sequence_steps < 1:
        raise TrainingError(f'sequence steps must be >= 1, got {config.sequence_steps}')
    if config.density_weight < 0:
        raise TrainingError(f'the density weight must be >= 0, got {config.density_weight}')
    if config.nce_weight < 0:
        raise TrainingError(f'the contrastive weight must be >= 0, got {config.nce_weight}')
    if not 0.0 <= config.nce_near_share <= 1.0:
        raise TrainingError(f'the near share of the contrastive term must be in [0, 1], got '
                            f'{config.nce_near_share}')


def scheduled_lr(config: TrainConfig, samples: int) -> float:
    """Return the learning rate after ``samples`` under ``config.lr_schedule``."""
    if config.lr_schedule == 'constant':
        return config.lr
    progress = min(1.0, samples / max(1, config.budget_samples))
    low = config.lr_min_factor
    return config.lr * (low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def finish_text(samples: int, factor: float) -> str:
    """Say the finishing stage of ``--finish-samples``/``--finish-lr-factor`` in words."""
    return (f'then {samples:,} samples from the best checkpoint at {factor:.3g} of the rate, '
            'with a fresh Adam')


def schedule_text(factor: float, patience: int) -> str:
    """Say the rate schedule of ``--lr-decay-factor``/``--lr-decay-patience`` in words."""
    if factor == 1.0:
        return "constant while a run trains (the paper's protocol)"
    return (f'multiplied by {factor:g} after more than {patience} validations in a row '
            'without a lower validation loss')


def plateau_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig
                      ) -> Optional[torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """
    Return the scheduler of a run whose rate decays on plateau, or None for a constant rate.

    An improvement is any validation loss below the best so far (``threshold=0``), the
    rule by which ``best.pt`` is kept.
    """
    if config.lr_decay_factor == 1.0:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode='min', factor=config.lr_decay_factor,
        patience=config.lr_decay_patience, threshold=0.0)
