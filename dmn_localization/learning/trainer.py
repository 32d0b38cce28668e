"""
Training with the paper's protocol: single-step tracking episodes, Nc=4, K=32, Adam.

Options of :class:`TrainConfig` train for global localization instead (all off by
default): several episodes per encoded map, episodes of several views, more particles
with a share spread over the map, a belief-density term, a cosine rate schedule, and
``best.pt`` chosen by one-step global success on validation.

A run lives in one directory::

    config.json   the training configuration
    last.pt       full training state (weights, optimizer, RNG states, counters),
                  written at every validation and at least every ``checkpoint_minutes``
    best.pt       model checkpoint with the lowest validation loss, or the highest
                  validation success (``select_by``); loadable by the node
    log.csv       training loss, validation loss and validation success against samples
    .lock         held (``flock``) by the process training in it: a second is refused

With ``lr_decay_factor`` below 1 the learning rate drops by that factor when the
validation loss stops improving (PyTorch's ``ReduceLROnPlateau``, its state saved with
the rest); at 1, the default, it is constant, the paper's protocol. With
``finish_samples``, a finishing stage follows the budget (or an early stop): the run
goes back to ``best.pt``, starts a fresh Adam at ``lr * finish_lr_factor`` and trains
that many samples more, with early stopping counted afresh (see :class:`TrainConfig`).

Running the same command again resumes exactly where ``last.pt`` left off; the result
equals that of an uninterrupted run. SIGINT (Ctrl-C) or SIGTERM stops a run at the end
of its current step with ``last.pt`` written there (:class:`TrainingInterrupted`), so a
stop loses no training; a second signal stops it at once, back to the last checkpoint.
Under ``torchrun`` the run is data-parallel (DDP; gloo on CPU, NCCL on CUDA): every
process draws its own episodes, rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import asdict, dataclass, field, replace
import io
import json
import math
import os
from pathlib import Path
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dmn_localization.core.atomic_write import write_atomic
from dmn_localization.core.checkpoint import (CheckpointError, load_checkpoint, samples_behind,
                                              save_checkpoint)
from dmn_localization.core.device import resolve_device
from dmn_localization.core.inference import FilterSettings, localize
from dmn_localization.core.losses import belief_nll, pose_loss, xy_squared_error
from dmn_localization.core.models import build_model, config_for, count_parameters
from dmn_localization.data.dataset import Dataset
from dmn_localization.data.episodes import EpisodeSampler
from dmn_localization.learning.batches import (check_frame_change, repeat_context,
                                               TensorEpisodes, to_tensors, tracking_belief,
                                               with_frame_change)
from dmn_localization.learning.provenance import add_revision, code_revision, machine
import numpy as np
import torch
from torch import nn, Tensor

LOG_FIELDS = ['step', 'samples', 'elapsed_s', 'train_loss', 'val_loss', 'val_global_success']
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


class RunInUseError(TrainingError):
    """Another process is training in the run directory (two would corrupt its state)."""


def signal_exit_code(signal_name: str) -> int:
    """Return the shell's status of a process ``signal_name`` ended: 128 plus its number."""
    return 128 + int(getattr(signal, signal_name, signal.SIGTERM))


class TrainingInterrupted(Exception):
    """A signal stopped the run; its state at that step is in ``last.pt``, to resume from."""

    def __init__(self, signal_name: str, samples: int, out: Path) -> None:
        super().__init__(f'{out}: stopped by {signal_name} at {samples:,} samples; last.pt '
                         'holds that step, and the same command resumes from it')
        self.signal_name = signal_name
        self.samples = samples
        self.out = out

    @property
    def exit_code(self) -> int:
        """Return the shell's status of a process a signal ended: 128 plus its number."""
        return signal_exit_code(self.signal_name)

    def __reduce__(self) -> tuple:
        """Pickle with its fields: ``dmn_results`` gets it from a worker process."""
        return type(self), (self.signal_name, self.samples, self.out)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """
    Hold the lock file ``out/.lock`` while a process trains in ``out``.

    The lock is the kernel's (``flock``): it goes with the process, so a killed run
    leaves nothing to clean up. Raises :class:`RunInUseError` when another process holds it.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / '.lock', 'a+') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'unknown'
            raise RunInUseError(f'{out} is being trained by another process (pid {holder})')
        f.seek(0)
        f.truncate()
        f.write(f'{os.getpid()}\n')
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


class EpisodeLoss(nn.Module):
    """Pose loss of a batch of tracking episodes; a module so DDP can wrap it."""

    def __init__(self, model: nn.Module, num_particles: int, uniform_share: float = 0.0,
                 nce_weight: float = 0.0, precision: str = 'fp32',
                 density_weight: float = 0.0, queries_per_map: int = 1,
                 sequence_steps: int = 1) -> None:
        super().__init__()
        self.model = model
        self.precision = precision  # 'bf16': the forward pass under bfloat16 autocast
        self.settings = FilterSettings(num_particles=num_particles)
        self.uniform_share = uniform_share
        self.nce_weight = nce_weight if model.config.kind == 'pf' else 0.0
        self.density_weight = density_weight if model.config.kind == 'pf' else 0.0
        #: > 1: the episodes' steps are that many episodes of ``sequence_steps`` steps each,
        #: of the same map
        self.queries_per_map = queries_per_map
        self.sequence_steps = sequence_steps

    def forward(self, episodes: TensorEpisodes, generator: torch.Generator) -> Tensor:
        """Return the mean pose loss over the batch and its time steps."""
        with torch.autocast(episodes.truth.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == 'bf16'):
            return self._loss(episodes, generator)

    def _loss(self, episodes: TensorEpisodes, generator: torch.Generator) -> Tensor:
        model = self.model
        map_ctx = model.prepare_map(model.embed_views(episodes.context_images,
                                                      episodes.context_poses),
                                    episodes.context_poses)
        if self.queries_per_map > 1:
            # one encoding of each map serves all of its queries
            map_ctx = repeat_context(map_ctx, self.queries_per_map)
            episodes = episodes.split_queries(self.sequence_steps)
        initial = tracking_belief(episodes.truth[:, 0], generator, episodes.bounds,
                                  self.uniform_share, episodes.turn)
        result = localize(model, map_ctx, episodes.query_images, episodes.motions, initial,
                          self.settings, generator, keep_beliefs=self.density_weight > 0)
        loss = pose_loss(result.estimates, episodes.truth)
        if self.density_weight > 0:
            assert result.beliefs is not None
            loss = loss + self.density_weight * torch.stack([
                belief_nll(belief.particles, belief.log_weights, episodes.truth[:, t])
                for t, belief in enumerate(result.beliefs)]).mean()
        if self.nce_weight > 0:
            loss = loss + self.nce_weight * self.contrastive(map_ctx, episodes, initial,
                                                             generator)
        return loss

    def contrastive(self, map_ctx: Any, episodes: TensorEpisodes, initial: Any,
                    generator: torch.Generator) -> Tensor:
        """
        Cross-entropy of the true first pose among it and K particles of the belief.

        The observation model's log-likelihoods of ``[truth, particles]`` ``(B, K + 1)``
        are read as logits and the truth is the class: a direct signal for the model to
        score the true pose above others, beside the pose loss that only sees the
        weighted mean.
        """
        model = self.model
        query = model.prepare_query(episodes.query_images[:, 0])
        others = initial.sample(self.settings.num_particles, generator).particles
        poses = torch.cat([episodes.truth[:, :1], others], 1)
        logits = model.observe(map_ctx, query, poses)[..., 0]
        return -torch.log_softmax(logits, dim=-1)[:, 0].mean()


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


def scheduled_lr(config: TrainConfig, samples: int) -> float:
    """Return the learning rate after ``samples`` under ``config.lr_schedule``."""
    if config.lr_schedule == 'constant':
        return config.lr
    progress = min(1.0, samples / max(1, config.budget_samples))
    low = config.lr_min_factor
    return config.lr * (low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def improved(metrics: Dict[str, float], counters: Dict[str, Any], select_by: str) -> bool:
    """Return whether a validation beats ``best.pt`` by the run's selection rule."""
    if select_by == 'global_success':
        best = counters['best_global_success']
        success = metrics['val_global_success']
        # a tie in success goes to the lower validation loss
        return success > best or (success == best
                                  and metrics['val_loss'] < counters['best_val_loss'])
    return metrics['val_loss'] < counters['best_val_loss']


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


def _distributed() -> tuple:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    return world, rank


@torch.no_grad()
def validate(model: nn.Module, episodes: TensorEpisodes, global_episodes: TensorEpisodes,
             num_particles: int, seed: int, chunk: int = 100,
             uniform_share: float = 0.0) -> Dict[str, float]:
    """Return the validation loss (tracking, as trained) and one-step global success (K=1024)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=episodes.truth.device).manual_seed(seed)
    losses = []
    for start in range(0, len(episodes), chunk):
        part = episodes.select(slice(start, start + chunk))
        loss = EpisodeLoss(model, num_particles, uniform_share)(part, generator)
        losses.append(float(loss) * len(part))
    successes = []
    settings = FilterSettings(num_particles=1024)
    for start in range(0, len(global_episodes), 20):
        part = global_episodes.select(slice(start, start + 20))
        map_ctx = model.prepare_map(model.embed_views(part.context_images, part.context_poses),
                                    part.context_poses)
        est = localize(model, map_ctx, part.query_images, part.motions,
                       part.global_belief(), settings, generator).estimates
        successes.append(xy_squared_error(est[:, -1], part.truth[:, -1]) < SUCCESS_THRESHOLD)
    model.train(was_training)
    return {'val_loss': sum(losses) / len(episodes),
            'val_global_success': float(torch.cat(successes).float().mean())}


def _all_agree(flags: Tuple[bool, ...], world_size: int) -> Tuple[bool, ...]:
    """Return rank 0's ``flags`` on every process (clocks and signals differ between them)."""
    if world_size == 1:
        return flags
    import torch.distributed as dist

    values = torch.tensor([1 if flag else 0 for flag in flags])
    dist.broadcast(values, src=0)  # one message a step, whatever the number of flags
    return tuple(bool(v) for v in values.tolist())


#: A signal this soon (seconds) after the first is the same stop delivered twice, not a
#: second request: ``kill -- -PGID`` of ``make`` reaches make's child, and make forwards
#: the signal it got to that child as well.
SAME_STOP_S = 1.0


class StopRequest:
    """The signal that asked a run to stop, ``0`` until one did: a handler that records it."""

    def __init__(self) -> None:
        self.signum = 0
        self._first_at = 0.0  # time.monotonic() of the first signal

    def record(self, signum: int) -> bool:
        """
        Record ``signum``; return whether it asks again: a stop at once, not at the step.

        The first signal and a copy of it (within :data:`SAME_STOP_S`) return False.
        """
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first_at = signum, now
            return False
        return now - self._first_at >= SAME_STOP_S

    def __call__(self, signum: int, frame: Any) -> None:
        if self.record(signum):  # asked twice: stop now, as without this handler
            raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals(signals: tuple = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """
    Record ``signals`` in a :class:`StopRequest` instead of ending the process.

    The training loop stops at the end of its step when one came. A signal ignored when
    this starts (``nohup``, a shell's background job) stays ignored, and outside the main
    thread, where Python cannot set handlers, nothing changes.
    """
    request = StopRequest()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, request)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def typical_extent(dataset: Dataset, count: int = 200) -> List[float]:
    """Return the median extent of the first ``count`` environments (metres)."""
    extents = np.stack([dataset.extent(i) for i in range(min(count, len(dataset)))])
    return [float(v) for v in np.median(extents, axis=0)]


def _save_state(path: Path, state: Dict[str, Any]) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def _truncate_log(path: Path, samples: int) -> None:
    """
    Keep the log rows written up to ``samples`` (a resumed run rewrites the rest).

    The file is replaced whole, and only when it has rows to drop: a kill never leaves
    it half written, and readers (``make results``' progress bar) never see it shrink
    for a run that had nothing to redo.
    """
    if not path.exists():
        return
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r['samples']) <= samples]
    if len(kept) == len(rows):
        return

    def write(tmp: Path) -> None:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(kept)
    write_atomic(path, write)


def _load_weights(model: nn.Module, path: str, source: str = '--init-from') -> Dict[str, Any]:
    """
    Copy the weights of checkpoint ``path`` into ``model``; return its metadata.

    Raises TrainingError, naming ``source``, unless the checkpoint holds the same model
    with the same config.
    """
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f'{source}: {exc}') from exc
    if loaded.model.config.to_dict() != model.config.to_dict():
        raise TrainingError(f'{source} {path}: its model is {loaded.model.config.to_dict()}, '
                            f'this run trains {model.config.to_dict()}')
    model.load_state_dict(loaded.model.state_dict())
    return loaded.metadata


def load_state(out: Path, device: Any = 'cpu') -> Optional[Dict[str, Any]]:
    """Return the full training state a run saved (``out/last.pt``), None if it has none."""
    path = Path(out) / 'last.pt'
    if not path.exists():
        return None
    return torch.load(io.BytesIO(path.read_bytes()), map_location=device, weights_only=True)


def _begin_finish(model: nn.Module, out: Path, config: TrainConfig, counters: Dict[str, Any],
                  world_size: int) -> torch.optim.Optimizer:
    """
    Turn a run that has spent its budget into its finishing stage; return its optimizer.

    The weights go back to those of ``best.pt`` (every process reads the file rank 0
    wrote), the counters start stage 1 with early stopping afresh, and the returned
    Adam starts at ``lr * finish_lr_factor`` with no moments.
    """
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # best.pt is written
    path = out / 'best.pt'
    if not path.exists():
        raise TrainingError(f'{out}: no best.pt to finish from (no validation had a finite '
                            'loss)')
    _load_weights(model, str(path), 'the finishing stage')
    counters.update(stage=1, finish_start=counters['samples'], stopped_early=False,
                    bad_validations=0, finish_lr_factor=config.finish_lr_factor)
    return torch.optim.Adam(model.parameters(), lr=config.lr * config.finish_lr_factor)


def train(config: TrainConfig, progress: bool = True) -> Dict[str, Any]:
    """
    Train (or resume) the run ``config``; return a summary of its state at the end.

    Raises :class:`RunInUseError` when another process trains in ``config.out``.
    """
    with stop_on_signals() as stop:
        if _distributed()[1] != 0:
            return _train(config, progress, stop)  # rank 0 holds the lock for all ranks
        with run_lock(Path(config.out)):
            return _train(config, progress, stop)


def _train(config: TrainConfig, progress: bool, stop: StopRequest) -> Dict[str, Any]:
    if config.precision not in PRECISIONS:
        raise TrainingError(f'precision must be one of {PRECISIONS}, got {config.precision!r}')
    if config.memory_format not in MEMORY_FORMATS:
        raise TrainingError(f'memory format must be one of {MEMORY_FORMATS}, got '
                            f'{config.memory_format!r}')
    check_frame_change(config.frame_shift, config.frame_turn)  # before the run is touched
    check_lr_decay(config.lr_decay_factor, config.lr_decay_patience)
    check_finish(config.finish_samples, config.finish_lr_factor, config.lr_decay_factor)
    check_schedule(config)
    world_size, rank = _distributed()
    device = resolve_device(config.device)
    owns_group = False
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
            owns_group = True
        if device.type == 'cuda':
            device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
    if device.type == 'cpu' and 'OMP_NUM_THREADS' not in os.environ:
        # all cores, shared among the processes (OMP_NUM_THREADS, when set, decides)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    train_set, val_set = Dataset(Path(config.train_data)), Dataset(Path(config.val_data))
    model = build_model(config_for(config.model, image_size=tuple(train_set.image_size),
                                   **config.model_options)).to(device)
    state_path, log_path = out / 'last.pt', out / 'log.csv'
    state = load_state(out, device)
    if state is not None:
        began = state.get('memory_format', MEMORY_FORMATS[0])
        if began != config.memory_format:
            if rank == 0:
                print(f'{out}: keeps the memory format it began with, {began}',
                      file=sys.stderr)
            config = replace(config, memory_format=began)
    if config.memory_format == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
    # the code of every process that trained this run (None: a checkpoint without the record)
    revisions = add_revision([] if state is None else state.get('code_revisions'),
                             code_revision())
    machines = add_revision([] if state is None else state.get('machines'), machine())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = plateau_scheduler(optimizer, config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, rank]))
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + rank)
    # stage 0: the budget; 1: the finishing stage, begun at finish_start samples
    counters = {'step': 0, 'samples': 0, 'best_val_loss': math.inf, 'bad_validations': 0,
                'elapsed_s': 0.0, 'stopped_early': False, 'init_samples': 0, 'stage': 0,
                'finish_start': 0, 'finish_lr_factor': 0.0, 'best_global_success': -1.0}
    running: List[float] = []  # recent training losses (the logged running mean)
    if state is not None:
        # fields added since the run started take their defaults (the behaviour it had)
        saved = {**TrainConfig(config.model, '', '', '').identity(), **state['config']}
        if saved != config.identity():
            raise TrainingError(f'{out} holds a run of another configuration: '
                                f'{state["config"]}; use another --out')
        try:
            model.load_state_dict(state['model'])
        except RuntimeError as exc:
            raise TrainingError(f'{out} holds weights of another architecture (a run from '
                                f'before a model option changed?): {exc}') from exc
        optimizer.load_state_dict(state['optimizer'])
        if scheduler is not None:
            scheduler.load_state_dict(state['lr_scheduler'])
        rng.bit_generator.state = state['numpy_rng'][rank]
        generator.set_state(state['torch_generator'][rank].cpu())
        torch.set_rng_state(state['torch_rng'])
        counters.update(state['counters'])
        running = list(state['recent_losses'])
        if counters['stage'] == 1 and counters['finish_lr_factor'] != config.finish_lr_factor:
            raise TrainingError(f'{out} is in its finishing stage at '
                                f'{counters["finish_lr_factor"]:g} of the rate, not '
                                f'{config.finish_lr_factor:g}; use another --out')
    elif config.init_from:
        # every sample behind those weights: a chain of runs adds up
        initial = _load_weights(model, config.init_from)
        counters['init_samples'] = samples_behind(initial) or 0
    if rank == 0:
        # rows past the checkpoint, or every row of an attempt killed before its first
        # checkpoint (the run then starts afresh), are rewritten
        _truncate_log(log_path, counters['samples'])
    (out / 'config.json').write_text(json.dumps(asdict(config), indent=1) + '\n')
    extent = typical_extent(train_set)
    sampler = EpisodeSampler(train_set, config.num_contexts,
                             config.queries_per_map * config.sequence_steps)
    val_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 99]))
    val_sampler = EpisodeSampler(val_set, config.num_contexts, 1)
    val_episodes = with_frame_change(
        to_tensors(val_sampler.sample(config.val_episodes, val_rng), model.config, device),
        config.frame_shift, val_rng, config.frame_turn)
    val_global = with_frame_change(
        to_tensors(val_sampler.sample(config.val_global_episodes, val_rng), model.config,
                   device), config.frame_shift, val_rng, config.frame_turn)
    loss_module: nn.Module = EpisodeLoss(model, config.num_particles, config.uniform_share,
                                         config.nce_weight, config.precision,
                                         config.density_weight, config.queries_per_map,
                                         config.sequence_steps)
    if world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module)
    if rank == 0 and counters['samples'] == 0:
        print(f'{config.model}: {count_parameters(model):,} parameters on {device}, '
              f'{world_size} process(es); training on {train_set.root} ({len(train_set)} envs)')
    per_step = config.batch_size * config.queries_per_map * config.sequence_steps * world_size
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        total = config.budget_samples + config.finish_samples
        bar = tqdm(total=total, initial=min(counters['samples'], total),
                   unit='sample', desc=config.model, smoothing=0.05, mininterval=5.0)
    started = time.monotonic() - counters['elapsed_s']
    last_save = time.monotonic()

    def save(kind: str) -> None:
        nonlocal last_save
        counters['elapsed_s'] = time.monotonic() - started
        numpy_states = [rng.bit_generator.state]
        torch_states = [generator.get_state()]
        if world_size > 1:
            import torch.distributed as dist

            gathered: List[Any] = [None] * world_size
            dist.all_gather_object(gathered, (rng.bit_generator.state, generator.get_state()))
            numpy_states = [g[0] for g in gathered]
            torch_states = [g[1] for g in gathered]
        if rank != 0:
            return
        _save_state(state_path, {
            'config': config.identity(), 'model': model.state_dict(),
            'optimizer': optimizer.state_dict(), 'numpy_rng': numpy_states,
            'lr_scheduler': None if scheduler is None else scheduler.state_dict(),
            'torch_generator': torch_states, 'torch_rng': torch.get_rng_state(),
            'counters': dict(counters), 'recent_losses': running[-50:],
            'memory_format': config.memory_format, 'code_revisions': revisions,
            'machines': machines})
        last_save = time.monotonic()

    def log(row: Dict[str, Any]) -> None:
        if rank != 0:
            return
        new = not log_path.exists()
        with open(log_path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, '') for k in LOG_FIELDS})

    def stage_end() -> int:
        if counters['stage'] == 0:
            return config.budget_samples
        return counters['finish_start'] + config.finish_samples

    asked_to_stop = False
    while True:
        if counters['samples'] >= stage_end() or counters['stopped_early']:
            if counters['stage'] == 1 or not config.finish_samples:
                break
            optimizer = _begin_finish(model, out, config, counters, world_size)
            if bar is not None:
                bar.write(f'samples {counters["samples"]:,}: finishing from best.pt (val loss '
                          f'{counters["best_val_loss"]:.4f}) at learning rate '
                          f'{optimizer.param_groups[0]["lr"]:.3g} for '
                          f'{config.finish_samples:,} samples')
            save('finish')
            continue
        batch = with_frame_change(to_tensors(sampler.sample(config.batch_size, rng),
                                             model.config, device), config.frame_shift, rng,
                                  config.frame_turn)
        if counters['stage'] == 0 and config.lr_schedule != 'constant':
            for group in optimizer.param_groups:
                group['lr'] = scheduled_lr(config, counters['samples'])
        loss = loss_module(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        counters['step'] += 1
        counters['samples'] += per_step
        running.append(float(loss.detach()))
        if bar is not None:
            bar.update(per_step)
            bar.set_postfix(loss=f'{np.mean(running[-50:]):.4f}', refresh=False)
        if counters['step'] % 50 == 0:
            log({'step': counters['step'], 'samples': counters['samples'],
                 'elapsed_s': round(time.monotonic() - started, 1),
                 'train_loss': round(float(np.mean(running[-50:])), 6)})
        validate_now = counters['samples'] // config.val_every_samples != (
            counters['samples'] - per_step) // config.val_every_samples
        save_due, asked_to_stop = _all_agree(
            (time.monotonic() - last_save > config.checkpoint_minutes * 60, stop.signum != 0),
            world_size)
        if validate_now or counters['samples'] >= stage_end():
            metrics = validate(model, val_episodes, val_global, config.num_particles,
                               config.seed, uniform_share=config.uniform_share
                               ) if rank == 0 else {}
            if world_size > 1:
                import torch.distributed as dist

                shared = [metrics]
                dist.broadcast_object_list(shared, src=0)
                metrics = shared[0]
            log({'step': counters['step'], 'samples': counters['samples'],
                 'elapsed_s': round(time.monotonic() - started, 1), **{
                     k: round(v, 6) for k, v in metrics.items()}})
            if improved(metrics, counters, config.select_by):
                counters['best_val_loss'] = metrics['val_loss']
                counters['best_global_success'] = metrics['val_global_success']
                counters['bad_validations'] = 0
                if rank == 0:
                    save_checkpoint(out / 'best.pt', model, extent, {
                        'samples': counters['samples'], 'step': counters['step'],
                        'val_loss': metrics['val_loss'],
                        'val_global_success': metrics['val_global_success'],
                        'train_data': str(config.train_data), 'seed': config.seed,
                        'lr': config.lr, 'lr_now': optimizer.param_groups[0]['lr'],
                        'lr_decay_factor': config.lr_decay_factor,
                        'lr_decay_patience': config.lr_decay_patience,
                        'finish_samples': config.finish_samples,
                        'finish_lr_factor': config.finish_lr_factor,
                        'stage': counters['stage'],
                        'batch_size': config.batch_size,
                        'num_contexts': config.num_contexts,
                        'num_particles': config.num_particles,
                        'init_from': config.init_from,
                        'init_samples': counters['init_samples'],
                        'frame_shift': config.frame_shift,
                        'frame_turn': config.frame_turn,
                        'precision': config.precision,
                        'memory_format': config.memory_format,
                        'queries_per_map': config.queries_per_map,
                        'sequence_steps': config.sequence_steps,
                        'density_weight': config.density_weight,
                        'lr_schedule': config.lr_schedule,
                        'select_by': config.select_by,
                        'code_revisions': revisions, 'machines': machines})
            else:
                counters['bad_validations'] += 1
                counters['stopped_early'] = counters['bad_validations'] >= config.patience
            if bar is not None:
                bar.write(f'samples {counters["samples"]:,}: val loss {metrics["val_loss"]:.4f}, '
                          f'one-step global success {metrics["val_global_success"]:.1%}')
            if scheduler is not None and validate_now:
                # only validations on the interval's grid: one at a budget's end between
                # two would make a run resumed with a larger budget differ from one run
                # uninterrupted
                before = optimizer.param_groups[0]['lr']
                scheduler.step(metrics['val_loss'])
                after = optimizer.param_groups[0]['lr']
                if after != before and bar is not None:
                    bar.write(f'samples {counters["samples"]:,}: learning rate {before:.3g} -> '
                              f'{after:.3g} (no improvement for '
                              f'{config.lr_decay_patience + 1} validations)')
            save('validation')
        elif save_due:
            save('time')
        if asked_to_stop:
            break  # last.pt is written below, at this step
    if bar is not None:
        bar.close()
    save('end')
    if owns_group:
        # tear gloo down before the interpreter does: its threads otherwise may abort
        # the process at exit ("terminate called without an active exception")
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if asked_to_stop:  # (on rank 0's signal; another rank may not have had one)
        raise TrainingInterrupted(signal.Signals(stop.signum).name if stop.signum else
                                  'a signal to rank 0', counters['samples'], out)
    return {**counters, 'lr': optimizer.param_groups[0]['lr'], 'out': str(out)}
