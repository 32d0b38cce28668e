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

import csv
from dataclasses import asdict, dataclass, field, fields, replace
import io
import json
import math
import os
from pathlib import Path
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from dmn_localization.core.atomic_write import write_atomic
from dmn_localization.core.checkpoint import (CheckpointError, load_checkpoint, samples_behind,
                                              save_checkpoint)
from dmn_localization.core.device import resolve_device
from dmn_localization.core.models import build_model, config_for, count_parameters
from dmn_localization.data.dataset import Dataset
from dmn_localization.data.episodes import EpisodeSampler
from dmn_localization.learning.batches import (check_frame_change, TensorEpisodes, to_tensors,
                                               with_frame_change)
from dmn_localization.learning.episode_loss import EpisodeLoss, validate
from dmn_localization.learning.provenance import add_revision, code_revision, machine
from dmn_localization.learning.run_control import (run_lock, stop_on_signals, StopRequest,
                                                   TrainingInterrupted)
from dmn_localization.learning.train_config import (check_finish, check_lr_decay,
                                                    check_schedule, MEMORY_FORMATS,
                                                    plateau_scheduler, PRECISIONS,
                                                    scheduled_lr, TrainConfig, TrainingError)
import numpy as np
import torch
from torch import nn

LOG_FIELDS = ['step', 'samples', 'elapsed_s', 'train_loss', 'val_loss', 'val_global_success']


@dataclass
class Counters:
    """Where a run stands; saved in ``last.pt`` as a dict (missing keys: their defaults)."""

    step: int = 0
    samples: int = 0
    best_val_loss: float = math.inf
    bad_validations: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    #: samples behind the weights a run started from (``--init-from``)
    init_samples: int = 0
    #: 0: the budget; 1: the finishing stage, begun at ``finish_start`` samples
    stage: int = 0
    finish_start: int = 0
    finish_lr_factor: float = 0.0
    best_global_success: float = -1.0

    @classmethod
    def from_dict(cls, saved: Dict[str, Any]) -> 'Counters':
        """Return the counters of a saved state."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass
class Run:
    """A run in training: its configuration, model, optimizer, random state, data, counters."""

    config: TrainConfig
    out: Path
    world_size: int
    rank: int
    model: nn.Module
    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau]
    rng: np.random.Generator
    generator: torch.Generator
    sampler: EpisodeSampler
    val_episodes: TensorEpisodes
    val_global: TensorEpisodes
    extent: List[float]
    revisions: List[str]
    machines: List[str]
    counters: Counters = field(default_factory=Counters)
    #: recent training losses (the logged running mean)
    running: List[float] = field(default_factory=list)
    started: float = 0.0
    last_save: float = 0.0
    bar: Any = None
    #: the camera of the training images, recorded in ``best.pt`` (None: unknown)
    camera: Optional[Dict[str, Any]] = None

    @property
    def per_step(self) -> int:
        """Return the query views one step trains on, over every process."""
        c = self.config
        return c.batch_size * c.queries_per_map * c.sequence_steps * self.world_size

    def stage_end(self) -> int:
        """Return the samples at which the current stage ends."""
        if self.counters.stage == 0:
            return self.config.budget_samples
        return self.counters.finish_start + self.config.finish_samples

    def say(self, text: str) -> None:
        """Print a line above the progress bar (rank 0 with a bar only)."""
        if self.bar is not None:
            self.bar.write(text)


def improved(metrics: Dict[str, float], counters: Counters, select_by: str) -> bool:
    """Return whether a validation beats ``best.pt`` by the run's selection rule."""
    if select_by == 'global_success':
        best = counters.best_global_success
        success = metrics['val_global_success']
        # a tie in success goes to the lower validation loss
        return success > best or (success == best
                                  and metrics['val_loss'] < counters.best_val_loss)
    return metrics['val_loss'] < counters.best_val_loss


def _distributed() -> tuple:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    return world, rank


def _all_agree(flags: Tuple[bool, ...], world_size: int) -> Tuple[bool, ...]:
    """Return rank 0's ``flags`` on every process (clocks and signals differ between them)."""
    if world_size == 1:
        return flags
    import torch.distributed as dist

    values = torch.tensor([1 if flag else 0 for flag in flags])
    dist.broadcast(values, src=0)  # one message a step, whatever the number of flags
    return tuple(bool(v) for v in values.tolist())


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
    with the same config; the image size may differ (the encoder takes any size and pools
    to a fixed feature grid, so the weights fit, e.g. to go on training on finer images).
    """
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f'{source}: {exc}') from exc
    theirs, ours = loaded.model.config.to_dict(), model.config.to_dict()
    theirs.pop('image_size')
    ours.pop('image_size')
    if theirs != ours:
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


def _check(config: TrainConfig) -> None:
    """Refuse a configuration that cannot run, before the run directory is touched."""
    if config.precision not in PRECISIONS:
        raise TrainingError(f'precision must be one of {PRECISIONS}, got {config.precision!r}')
    if config.memory_format not in MEMORY_FORMATS:
        raise TrainingError(f'memory format must be one of {MEMORY_FORMATS}, got '
                            f'{config.memory_format!r}')
    check_frame_change(config.frame_shift, config.frame_turn)
    check_lr_decay(config.lr_decay_factor, config.lr_decay_patience)
    check_finish(config.finish_samples, config.finish_lr_factor, config.lr_decay_factor)
    check_schedule(config)


def _device(config: TrainConfig, world_size: int) -> Tuple[torch.device, bool]:
    """Return the device of this process and whether it started the process group."""
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
    return device, owns_group


def _set_up(config: TrainConfig, device: torch.device, world_size: int, rank: int) -> Run:
    """Build the run of ``config``: a new one, or the one saved in its ``last.pt``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    train_set, val_set = Dataset(Path(config.train_data)), Dataset(Path(config.val_data))
    model = build_model(config_for(config.model, image_size=tuple(train_set.image_size),
                                   **config.model_options)).to(device)
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
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
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
                                         config.sequence_steps, config.nce_near_share)
    if world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module)
    run = Run(
        config=config, out=out, world_size=world_size, rank=rank, model=model,
        loss_module=loss_module, optimizer=optimizer,
        scheduler=plateau_scheduler(optimizer, config),
        rng=np.random.default_rng(np.random.SeedSequence([config.seed, rank])),
        generator=torch.Generator(device=device).manual_seed(config.seed * 1000 + rank),
        sampler=EpisodeSampler(train_set, config.num_contexts,
                               config.queries_per_map * config.sequence_steps),
        val_episodes=val_episodes, val_global=val_global, extent=typical_extent(train_set),
        # the code and machine of every process that trained this run
        revisions=add_revision([] if state is None else state.get('code_revisions'),
                               code_revision()),
        machines=add_revision([] if state is None else state.get('machines'), machine()),
        camera=train_set.camera)
    if state is not None:
        _resume(run, state)
    elif config.init_from:
        # every sample behind those weights: a chain of runs adds up
        run.counters.init_samples = samples_behind(_load_weights(model, config.init_from)) or 0
    if rank == 0:
        # rows past the checkpoint, or every row of an attempt killed before its first
        # checkpoint (the run then starts afresh), are rewritten
        _truncate_log(out / 'log.csv', run.counters.samples)
    (out / 'config.json').write_text(json.dumps(asdict(config), indent=1) + '\n')
    if rank == 0 and run.counters.samples == 0:
        print(f'{config.model}: {count_parameters(model):,} parameters on {device}, '
              f'{world_size} process(es); training on {train_set.root} ({len(train_set)} envs)')
    return run


def _resume(run: Run, state: Dict[str, Any]) -> None:
    """Restore the weights, optimizer, random state and counters ``last.pt`` saved."""
    config, out = run.config, run.out
    # fields added since the run started take their defaults (the behaviour it had)
    saved = {**TrainConfig(config.model, '', '', '').identity(), **state['config']}
    if saved != config.identity():
        raise TrainingError(f'{out} holds a run of another configuration: '
                            f'{state["config"]}; use another --out')
    try:
        run.model.load_state_dict(state['model'])
    except RuntimeError as exc:
        raise TrainingError(f'{out} holds weights of another architecture (a run from '
                            f'before a model option changed?): {exc}') from exc
    run.optimizer.load_state_dict(state['optimizer'])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(state['lr_scheduler'])
    run.rng.bit_generator.state = state['numpy_rng'][run.rank]
    run.generator.set_state(state['torch_generator'][run.rank].cpu())
    torch.set_rng_state(state['torch_rng'])
    run.counters = Counters.from_dict(state['counters'])
    run.running = list(state['recent_losses'])
    if run.counters.stage == 1 and run.counters.finish_lr_factor != config.finish_lr_factor:
        raise TrainingError(f'{out} is in its finishing stage at '
                            f'{run.counters.finish_lr_factor:g} of the rate, not '
                            f'{config.finish_lr_factor:g}; use another --out')


def _save(run: Run) -> None:
    """Write the full training state to ``last.pt`` (rank 0; every rank's random state)."""
    run.counters.elapsed_s = time.monotonic() - run.started
    numpy_states = [run.rng.bit_generator.state]
    torch_states = [run.generator.get_state()]
    if run.world_size > 1:
        import torch.distributed as dist

        gathered: List[Any] = [None] * run.world_size
        dist.all_gather_object(gathered, (run.rng.bit_generator.state,
                                          run.generator.get_state()))
        numpy_states = [g[0] for g in gathered]
        torch_states = [g[1] for g in gathered]
    if run.rank != 0:
        return
    _save_state(run.out / 'last.pt', {
        'config': run.config.identity(), 'model': run.model.state_dict(),
        'optimizer': run.optimizer.state_dict(), 'numpy_rng': numpy_states,
        'lr_scheduler': None if run.scheduler is None else run.scheduler.state_dict(),
        'torch_generator': torch_states, 'torch_rng': torch.get_rng_state(),
        'counters': asdict(run.counters), 'recent_losses': run.running[-50:],
        'memory_format': run.config.memory_format, 'code_revisions': run.revisions,
        'machines': run.machines})
    run.last_save = time.monotonic()


def _log(run: Run, row: Dict[str, Any]) -> None:
    """Append a row to ``log.csv`` (rank 0)."""
    if run.rank != 0:
        return
    path = run.out / 'log.csv'
    new = not path.exists()
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, '') for k in LOG_FIELDS})


def _step(run: Run) -> None:
    """Train one batch; log the running loss every 50 steps."""
    config, counters = run.config, run.counters
    batch = with_frame_change(to_tensors(run.sampler.sample(config.batch_size, run.rng),
                                         run.model.config, run.generator.device),
                              config.frame_shift, run.rng, config.frame_turn)
    if counters.stage == 0 and config.lr_schedule != 'constant':
        for group in run.optimizer.param_groups:
            group['lr'] = scheduled_lr(config, counters.samples)
    loss = run.loss_module(batch, run.generator)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    counters.step += 1
    counters.samples += run.per_step
    run.running.append(float(loss.detach()))
    if run.bar is not None:
        run.bar.update(run.per_step)
        run.bar.set_postfix(loss=f'{np.mean(run.running[-50:]):.4f}', refresh=False)
    if counters.step % 50 == 0:
        _log(run, {'step': counters.step, 'samples': counters.samples,
                   'elapsed_s': round(time.monotonic() - run.started, 1),
                   'train_loss': round(float(np.mean(run.running[-50:])), 6)})


def _best_metadata(run: Run, metrics: Dict[str, float]) -> Dict[str, Any]:
    """Return what ``best.pt`` records about the run at this validation."""
    c, counters = run.config, run.counters
    return {'samples': counters.samples, 'step': counters.step,
            'val_loss': metrics['val_loss'],
            'val_global_success': metrics['val_global_success'],
            'train_data': str(c.train_data), 'seed': c.seed, 'lr': c.lr,
            'lr_now': run.optimizer.param_groups[0]['lr'],
            'lr_decay_factor': c.lr_decay_factor, 'lr_decay_patience': c.lr_decay_patience,
            'finish_samples': c.finish_samples, 'finish_lr_factor': c.finish_lr_factor,
            'stage': counters.stage, 'batch_size': c.batch_size,
            'num_contexts': c.num_contexts, 'num_particles': c.num_particles,
            'init_from': c.init_from, 'init_samples': counters.init_samples,
            'frame_shift': c.frame_shift, 'frame_turn': c.frame_turn,
            'precision': c.precision, 'memory_format': c.memory_format,
            'queries_per_map': c.queries_per_map, 'sequence_steps': c.sequence_steps,
            'density_weight': c.density_weight, 'nce_weight': c.nce_weight,
            'nce_near_share': c.nce_near_share, 'lr_schedule': c.lr_schedule,
            'select_by': c.select_by, 'code_revisions': run.revisions,
            'machines': run.machines, 'camera': run.camera}


def _validate(run: Run, on_grid: bool) -> None:
    """
    Validate, keep ``best.pt`` by the run's selection rule, count early stopping.

    ``on_grid``: the validation falls on the interval's grid (not only at a stage's end);
    only those step the plateau scheduler, so a run resumed with a larger budget equals
    one run uninterrupted.
    """
    config, counters = run.config, run.counters
    metrics = validate(run.model, run.val_episodes, run.val_global, config.num_particles,
                       config.seed, uniform_share=config.uniform_share) if run.rank == 0 else {}
    if run.world_size > 1:
        import torch.distributed as dist

        shared = [metrics]
        dist.broadcast_object_list(shared, src=0)
        metrics = shared[0]
    _log(run, {'step': counters.step, 'samples': counters.samples,
               'elapsed_s': round(time.monotonic() - run.started, 1),
               **{k: round(v, 6) for k, v in metrics.items()}})
    if improved(metrics, counters, config.select_by):
        counters.best_val_loss = metrics['val_loss']
        counters.best_global_success = metrics['val_global_success']
        counters.bad_validations = 0
        if run.rank == 0:
            save_checkpoint(run.out / 'best.pt', run.model, run.extent,
                            _best_metadata(run, metrics))
    else:
        counters.bad_validations += 1
        counters.stopped_early = counters.bad_validations >= config.patience
    run.say(f'samples {counters.samples:,}: val loss {metrics["val_loss"]:.4f}, '
            f'one-step global success {metrics["val_global_success"]:.1%}')
    if run.scheduler is not None and on_grid:
        before = run.optimizer.param_groups[0]['lr']
        run.scheduler.step(metrics['val_loss'])
        after = run.optimizer.param_groups[0]['lr']
        if after != before:
            run.say(f'samples {counters.samples:,}: learning rate {before:.3g} -> {after:.3g} '
                    f'(no improvement for {config.lr_decay_patience + 1} validations)')


def _begin_finish(model: nn.Module, out: Path, config: TrainConfig, counters: Counters,
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
    counters.stage, counters.finish_start = 1, counters.samples
    counters.stopped_early, counters.bad_validations = False, 0
    counters.finish_lr_factor = config.finish_lr_factor
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
    """Set the run up, train it step by step to the end of its stages, save it."""
    _check(config)
    world_size, rank = _distributed()
    device, owns_group = _device(config, world_size)
    run = _set_up(config, device, world_size, rank)
    config, counters = run.config, run.counters
    if progress and rank == 0:
        from tqdm import tqdm

        total = config.budget_samples + config.finish_samples
        run.bar = tqdm(total=total, initial=min(counters.samples, total), unit='sample',
                       desc=config.model, smoothing=0.05, mininterval=5.0)
    run.started = time.monotonic() - counters.elapsed_s
    run.last_save = time.monotonic()
    asked_to_stop = False
    while True:
        counters = run.counters
        if counters.samples >= run.stage_end() or counters.stopped_early:
            if counters.stage == 1 or not config.finish_samples:
                break
            run.optimizer = _begin_finish(run.model, run.out, config, counters, world_size)
            run.say(f'samples {counters.samples:,}: finishing from best.pt (val loss '
                    f'{counters.best_val_loss:.4f}) at learning rate '
                    f'{run.optimizer.param_groups[0]["lr"]:.3g} for '
                    f'{config.finish_samples:,} samples')
            _save(run)
            continue
        _step(run)
        on_grid = counters.samples // config.val_every_samples != (
            counters.samples - run.per_step) // config.val_every_samples
        save_due, asked_to_stop = _all_agree(
            (time.monotonic() - run.last_save > config.checkpoint_minutes * 60,
             stop.signum != 0), world_size)
        if on_grid or counters.samples >= run.stage_end():
            _validate(run, on_grid)
            _save(run)
        elif save_due:
            _save(run)
        if asked_to_stop:
            break  # last.pt is written below, at this step
    if run.bar is not None:
        run.bar.close()
    _save(run)
    if owns_group:
        # tear gloo down before the interpreter does: its threads otherwise may abort
        # the process at exit ("terminate called without an active exception")
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if asked_to_stop:  # (on rank 0's signal; another rank may not have had one)
        raise TrainingInterrupted(signal.Signals(stop.signum).name if stop.signum else
                                  'a signal to rank 0', run.counters.samples, run.out)
    return {**asdict(run.counters), 'lr': run.optimizer.param_groups[0]['lr'],
            'out': str(run.out)}
