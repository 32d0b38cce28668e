"""
Benchmark of the DMN core: filter step, fast vs direct, training, evaluation batch, memory.

    python -m dmn_localization.bench.core_bench [--out runs/bench/core.json] [--quick]

Filter step = query encoding + observation model + transition + soft resampling, for
one camera frame (the evaluation batch: 25 frames, with and without keeping freed
memory), with the architecture of the node's default model (its config; random weights:
speed does not depend on training). Every ratio is
measured in the same run on the same machine. Targets (2-core CPU): K=2048, Nc=4 at
most 25 ms median; fast path at least 10x the direct one at K=2048; Nc=64 at most 4x
the Nc=4 time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import platform
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

from dmn_localization.core import particle_filter as pf
from dmn_localization.core.allocator import keep_freed_memory
from dmn_localization.core.configs import InputConfig
from dmn_localization.core.device import resolve_device
from dmn_localization.core.inference import filter_step, FilterSettings
from dmn_localization.core.models import build_model, config_for, parameter_table
from dmn_localization.learning.batches import TensorEpisodes
from dmn_localization.learning.episode_loss import EpisodeLoss
from dmn_localization.learning.evaluation import EVAL_CHUNK as EVAL_BATCH
from dmn_localization.learning.train_config import TrainConfig
import torch

TARGET_STEP_MS = 25.0
TARGET_FAST_RATIO = 10.0
TARGET_NC_RATIO = 4.0
#: Batch of the training steps timed (as dmn_train trains: B=16)
TRAIN_BATCH = 16


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def filter_step_ms(model: torch.nn.Module, num_particles: int, num_views: int, fast: bool,
                   device: torch.device, reps: int, batch: int = 1) -> float:
    """Median time of one filter step for ``batch`` frames (one per episode), in ms."""
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, num_views, 3, 32, 32, device=device, generator=gen)
    poses = torch.rand(batch, num_views, 3, device=device, generator=gen) * 2 - 1
    query = torch.randn(batch, 3, 32, 32, device=device, generator=gen)
    settings = FilterSettings(num_particles=num_particles, fast=fast,
                              transition_noise=(0.01, 0.01, 0.02))
    bounds = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], device=device).repeat(batch, 1)
    motion = torch.tensor([[0.02, 0.0, 0.05]], device=device).repeat(batch, 1)
    with torch.no_grad():
        map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
        belief = pf.uniform_belief(bounds, num_particles, gen)

        def step() -> None:
            stepped = filter_step(model, map_ctx, model.prepare_query(query), belief, motion,
                                  settings, gen)
            pf.soft_resample(stepped, settings.soft_resample_alpha, gen)

        return _median_ms(step, device, reps)


def training_step(name: str, device: torch.device, precision: str = 'fp32',
                  memory_format: str = 'channels_last') -> Callable[[], None]:
    """
    Return one training step at B=16, K=32, Nc=4: the step ``dmn_train`` takes.

    Its loss module (:class:`EpisodeLoss`, with the default share of uniform particles)
    on a synthetic batch, backward, Adam. ``precision='bf16'``: the forward pass under
    bfloat16 autocast, as ``dmn_train --precision bf16`` runs it. ``memory_format``: the
    weights' layout (``dmn_train --memory-format``, channels_last by default).
    """
    torch.manual_seed(0)
    model = build_model(config_for(name)).to(device).train()
    if memory_format == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_module = EpisodeLoss(model, 32, TrainConfig(name, '', '', '').uniform_share,
                              precision=precision)
    episodes = TensorEpisodes(
        context_images=torch.randn(TRAIN_BATCH, 4, 3, 32, 32, device=device),
        context_poses=torch.rand(TRAIN_BATCH, 4, 3, device=device) * 2 - 1,
        query_images=torch.randn(TRAIN_BATCH, 1, 3, 32, 32, device=device),
        truth=torch.rand(TRAIN_BATCH, 1, 3, device=device) * 2 - 1,
        motions=torch.zeros(TRAIN_BATCH, 1, 3, device=device),
        bounds=torch.tensor([-1.0, -1.0, 1.0, 1.0], device=device).repeat(TRAIN_BATCH, 1))
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        loss = loss_module(episodes, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def paired_samples_per_second(steps: Dict[str, Callable[[], None]], device: torch.device,
                              rounds: int) -> Dict[str, float]:
    """
    Training samples per second of several step variants, timed in alternation.

    Each round times every variant once, so a load that comes and goes on a shared
    machine slows them alike and their ratios hold; the median over the rounds.
    """
    for step in steps.values():
        _median_ms(step, device, 1)  # warm-up
    times: Dict[str, List[float]] = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            times[key].append(_median_ms(step, device, 1, warmup=0))
    return {key: TRAIN_BATCH / (statistics.median(ms) / 1000.0) for key, ms in times.items()}


def default_architecture() -> Tuple[InputConfig, str]:
    """Return the config of the node's default model and its name (``dmn-pf``'s without one)."""
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.runtime.default_model import default_model

    path = default_model()
    if path is None:
        return config_for('dmn-pf'), 'dmn-pf at its defaults (no shipped model)'
    return load_checkpoint(path).model.config, path.name


def run(quick: bool, device: torch.device) -> Dict[str, Any]:
    """Measure everything; return the results as a dict."""
    torch.manual_seed(0)
    config, architecture = default_architecture()
    model = build_model(config).to(device).eval()
    reps = 5 if quick else 30
    rows: List[Dict[str, Any]] = []
    for num_particles in (256, 2048, 8192):
        for num_views in (4, 16, 64):
            ms = filter_step_ms(model, num_particles, num_views, True, device, reps)
            rows.append({'K': num_particles, 'Nc': num_views, 'fast_ms': round(ms, 3),
                         'peak_rss_mib': round(_peak_rss_mib(), 1)})
    direct = {}
    for num_particles in (256, 2048):
        direct[num_particles] = filter_step_ms(model, num_particles, 4, False, device,
                                               max(3, reps // 5))
    fast_2048 = next(r['fast_ms'] for r in rows if r['K'] == 2048 and r['Nc'] == 4)
    nc64_2048 = next(r['fast_ms'] for r in rows if r['K'] == 2048 and r['Nc'] == 64)
    names = ('dmn-pf', 'image-pf', 'vector-pf')
    training = {name: round(paired_samples_per_second(
        {'': training_step(name, device)}, device, 5 if quick else 20)[''], 1)
        for name in names}
    # variants against float32 at one thread, as make results trains (--jobs 2 on 2
    # cores): with more threads float32 gains more from them than bf16 does
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    variants = {'fp32': ('fp32', 'channels_last'), 'bf16': ('bf16', 'channels_last'),
                'fp32-contiguous': ('fp32', 'contiguous')}
    by_name = {name: paired_samples_per_second(
        {key: training_step(name, device, *args) for key, args in variants.items()},
        device, 5 if quick else 20) for name in names}
    one_thread = {key: {name: by_name[name][key] for name in names} for key in variants}
    torch.set_num_threads(threads)
    # last: keep_freed_memory() lasts for the rest of the process
    evaluation_batch = {'default': filter_step_ms(model, 2048, 4, True, device, reps,
                                                  batch=EVAL_BATCH)}
    evaluation_batch['kept'] = (filter_step_ms(model, 2048, 4, True, device, reps,
                                               batch=EVAL_BATCH)
                                if keep_freed_memory() else evaluation_batch['default'])
    result = {
        'device': str(device), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'filter_model': architecture, 'filter_model_config': config.to_dict(),
        'machine': platform.machine(), 'processor': platform.processor(),
        'filter_step': rows,
        'direct_ms': {str(k): round(v, 3) for k, v in direct.items()},
        'fast_vs_direct_k256': round(direct[256] / next(
            r['fast_ms'] for r in rows if r['K'] == 256 and r['Nc'] == 4), 2),
        'fast_vs_direct_k2048': round(direct[2048] / fast_2048, 2),
        'nc64_vs_nc4_k2048': round(nc64_2048 / fast_2048, 2),
        'training_samples_per_s_b16_k32_nc4': training,
        'training_samples_per_s_one_thread': {p: {k: round(v, 1) for k, v in r.items()}
                                              for p, r in one_thread.items()},
        'training_bf16_vs_fp32_one_thread': {
            name: round(one_thread['bf16'][name] / one_thread['fp32'][name], 2)
            for name in names},
        'training_channels_last_vs_contiguous_one_thread': {
            name: round(one_thread['fp32'][name] / one_thread['fp32-contiguous'][name], 2)
            for name in names},
        'evaluation_batch_ms': {k: round(v, 1) for k, v in evaluation_batch.items()},
        'evaluation_kept_vs_default': round(evaluation_batch['default']
                                            / evaluation_batch['kept'], 2),
        'peak_rss_mib': round(_peak_rss_mib(), 1),
    }
    if device.type == 'cuda':
        result['cuda_max_memory_mib'] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    result['targets'] = {
        'step_k2048_nc4_ms <= 25': fast_2048 <= TARGET_STEP_MS,
        'fast_vs_direct_k2048 >= 10': result['fast_vs_direct_k2048'] >= TARGET_FAST_RATIO,
        'nc64_vs_nc4_k2048 <= 4': result['nc64_vs_nc4_k2048'] <= TARGET_NC_RATIO,
    }
    return result


def format_table(result: Dict[str, Any]) -> str:
    """Render the results as the text table `make bench` prints."""
    lines = [f'DMN core benchmark on {result["device"]} (torch {result["torch"]}, '
             f'{result["threads"]} threads)', '', parameter_table(), '',
             f'filter step, fast path (median ms per frame), architecture of '
             f'{result["filter_model"]}:',
             f'{"K":>6} | {"Nc=4":>8} {"Nc=16":>8} {"Nc=64":>8}']
    for num_particles in (256, 2048, 8192):
        cells = [r['fast_ms'] for r in result['filter_step'] if r['K'] == num_particles]
        lines.append(f'{num_particles:>6} | ' + ' '.join(f'{c:>8.2f}' for c in cells))
    lines += ['',
              f'direct path, Nc=4: K=256 {result["direct_ms"]["256"]:.1f} ms, '
              f'K=2048 {result["direct_ms"]["2048"]:.1f} ms',
              f'fast vs direct: {result["fast_vs_direct_k256"]:.1f}x at K=256, '
              f'{result["fast_vs_direct_k2048"]:.1f}x at K=2048',
              f'Nc=64 vs Nc=4 at K=2048: {result["nc64_vs_nc4_k2048"]:.2f}x',
              'training samples/s (B=16, K=32, Nc=4): ' + ', '.join(
                  f'{k} {v:.0f}' for k, v in result['training_samples_per_s_b16_k32_nc4'].items()),
              'bf16 autocast vs float32 training at one thread (dmn_train --precision bf16): '
              + ', '.join(f'{k} {v:.2f}x'
                          for k, v in result['training_bf16_vs_fp32_one_thread'].items()),
              'channels_last vs contiguous weights, float32 training at one thread '
              '(dmn_train --memory-format): ' + ', '.join(
                  f'{k} {v:.2f}x' for k, v in
                  result['training_channels_last_vs_contiguous_one_thread'].items()),
              f'evaluation batch ({EVAL_BATCH} frames, K=2048, Nc=4): '
              f'{result["evaluation_batch_ms"]["default"]:.0f} ms with the default allocator, '
              f'{result["evaluation_batch_ms"]["kept"]:.0f} ms keeping freed memory '
              f'(core/allocator.py): {result["evaluation_kept_vs_default"]:.2f}x',
              f'peak RSS: {result["peak_rss_mib"]:.0f} MiB', '', 'targets:']
    lines += [f'  {"met " if ok else "MISS"}  {name}' for name, ok in result['targets'].items()]
    return '\n'.join(lines)


def main(argv: List[str] = None) -> int:
    """Run the benchmark, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=Path('runs/bench/core.json'))
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--quick', action='store_true', help='fewer repetitions')
    args = parser.parse_args(argv)
    result = run(args.quick, resolve_device(args.device))
    print(format_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'\nwritten: {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
