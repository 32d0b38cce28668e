"""
The paper's evaluation protocol on held-out test environments.

Settings (paper, section 4): one-step global localization (t=1, K=2048), sequential
global localization (t=5, K=2048), tracking (t=5, K=256, initial sigma 0.3, 0.3, 30
degrees). Success: squared x-y error of the final estimate, in normalized units, below
0.2; tracking: mean squared x-y error at the final step. Every model sees the same
episodes: they are drawn from the test set with a fixed seed. The success under a
stricter reading (x-y distance below 0.2) is reported beside it (``success_strict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from dmn_localization.core.inference import closest_context, FilterSettings, localize, uninformed
from dmn_localization.core.losses import xy_squared_error
from dmn_localization.data.dataset import Dataset
from dmn_localization.data.episodes import EpisodeSampler
from dmn_localization.learning.batches import (TensorEpisodes, to_tensors, tracking_belief,
                                               with_frame_change)
from dmn_localization.learning.train_config import STRICT_SUCCESS_THRESHOLD, SUCCESS_THRESHOLD
import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Protocol:
    """One evaluation setting."""

    name: str
    steps: int
    num_particles: int
    initial: str  # 'global' or 'tracking'
    metric: str  # 'success' or 'mse'


#: Episodes filtered at once (the random draws, and so the results, depend on it)
EVAL_CHUNK = 25

PROTOCOLS = {
    'one-step-global': Protocol('one-step-global', 1, 2048, 'global', 'success'),
    'sequential-global': Protocol('sequential-global', 5, 2048, 'global', 'success'),
    'tracking': Protocol('tracking', 5, 256, 'tracking', 'mse'),
}


def episode_metrics(estimates: torch.Tensor, truth: torch.Tensor) -> Dict[str, np.ndarray]:
    """Per-episode final squared x-y error and success, from ``(B, T, 3)`` tensors."""
    err = xy_squared_error(estimates[:, -1], truth[:, -1]).detach().cpu().numpy()
    return {'sq_error': err, 'success': err < SUCCESS_THRESHOLD}


def summarize(sq_error: np.ndarray, metric: str) -> Dict[str, float]:
    """
    Aggregate per-episode errors: success rate (with its standard error) or MSE.

    ``success_strict``: the success rate at :data:`STRICT_SUCCESS_THRESHOLD`.
    """
    n = len(sq_error)
    success = float(np.mean(sq_error < SUCCESS_THRESHOLD))
    out = {'episodes': n, 'success': success,
           'success_stderr': float(np.sqrt(success * (1 - success) / max(n, 1))),
           'success_strict': float(np.mean(sq_error < STRICT_SUCCESS_THRESHOLD)),
           'mse': float(np.mean(sq_error))}
    out['value'] = out['success'] if metric == 'success' else out['mse']
    return out


@torch.no_grad()
def run_model(model: Optional[nn.Module], name: str, episodes: TensorEpisodes,
              protocol: Protocol, generator: torch.Generator,
              num_particles: Optional[int] = None, chunk: int = EVAL_CHUNK,
              likelihood_scale: float = 1.0,
              mode_bandwidth: Optional[float] = None) -> np.ndarray:
    """
    Return the final squared x-y error of every episode for model ``name``.

    ``likelihood_scale``, ``mode_bandwidth``: as in
    :class:`~dmn_localization.core.inference.FilterSettings` (the paper's protocol: 1, None).
    """
    errors = []
    for start in range(0, len(episodes), chunk):
        part = episodes.select(slice(start, start + chunk))
        if protocol.initial == 'global':
            initial = part.global_belief()
        else:
            initial = tracking_belief(part.truth[:, 0], generator)
        if name == 'closest-context':
            est = closest_context(part.context_poses, part.truth)
        elif name == 'uninformed':
            est = uninformed(initial, part.motions)
        else:
            map_ctx = model.prepare_map(model.embed_views(part.context_images,
                                                          part.context_poses),
                                        part.context_poses)
            settings = FilterSettings(num_particles=num_particles or protocol.num_particles,
                                      likelihood_scale=likelihood_scale,
                                      mode_bandwidth=mode_bandwidth)
            est = localize(model, map_ctx, part.query_images, part.motions, initial, settings,
                           generator).estimates
        errors.append(episode_metrics(est, part.truth)['sq_error'])
    return np.concatenate(errors)


def fixed_episodes(dataset: Dataset, protocol: Protocol, count: int, seed: int,
                   config: Any, device: torch.device, num_contexts: int = 4,
                   frame_shift: float = 0.0, frame_turn: float = 0.0) -> TensorEpisodes:
    """
    Draw the fixed test episodes of a protocol (the same for every model).

    ``frame_shift`` > 0 moves each episode's world by a fixed random offset up to that,
    ``frame_turn`` > 0 turns it by a fixed random angle up to that many degrees
    (:func:`~dmn_localization.learning.batches.with_frame_change`); the episodes are the
    same.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, protocol.steps, 1234]))
    batch = EpisodeSampler(dataset, num_contexts, protocol.steps).sample(count, rng)
    offsets_rng = np.random.default_rng(np.random.SeedSequence([seed, protocol.steps, 4321]))
    return with_frame_change(to_tensors(batch, config, device), frame_shift, offsets_rng,
                             frame_turn)


def evaluate(models: Dict[str, Optional[nn.Module]], dataset: Dataset, episodes: int,
             seed: int = 0, protocols: Optional[List[str]] = None,
             device: Optional[torch.device] = None, frame_shift: float = 0.0,
             likelihood_scale: float = 1.0, frame_turn: float = 0.0,
             mode_bandwidth: Optional[float] = None
             ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """
    Evaluate models (``None`` for the non-learned ones) under the protocols.

    ``frame_shift``, ``frame_turn``: see :func:`fixed_episodes`; ``likelihood_scale``,
    ``mode_bandwidth``: see :func:`run_model`.

    Returns ``{protocol: {model name: summary}}``.
    """
    from dmn_localization.core.configs import InputConfig

    device = device or torch.device('cpu')
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for pname in protocols or list(PROTOCOLS):
        protocol = PROTOCOLS[pname]
        results[pname] = {}
        for name, model in models.items():
            config = model.config if model is not None else InputConfig(
                image_size=dataset.image_size)
            data = fixed_episodes(dataset, protocol, episodes, seed, config, device,
                                  frame_shift=frame_shift, frame_turn=frame_turn)
            generator = torch.Generator(device=device).manual_seed(seed)
            errors = run_model(model, name, data, protocol, generator,
                               likelihood_scale=likelihood_scale,
                               mode_bandwidth=mode_bandwidth)
            results[pname][name] = summarize(errors, protocol.metric)
    return results


def format_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """Render results as a text table: rows models, columns protocols."""
    protocols = list(results)
    models = list(next(iter(results.values())))
    width = max([20] + [len(name) + 2 for name in models])  # checkpoint paths can be long
    head = f'{"model":<{width}}' + ''.join(f'{p:>22}' for p in protocols)
    rows = [head, '-' * len(head)]
    for name in models:
        cells = []
        for p in protocols:
            r = results[p][name]
            cells.append(f'{r["success"]:>15.1%} ±{r["success_stderr"]:.1%}'
                         if PROTOCOLS[p].metric == 'success' else f'{r["mse"]:>22.4f}')
        rows.append(f'{name:<{width}}' + ''.join(f'{c:>22}' for c in cells))
    return '\n'.join(rows)


def markdown_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """Render results as a Markdown table: success (± stderr) and strict success, or MSE."""
    protocols = list(results)
    models = list(next(iter(results.values())))
    head, rule = ['model'], ['---']
    for p in protocols:
        if PROTOCOLS[p].metric == 'success':
            head += [p, f'{p}, strict']
            rule += ['---', '---']
        else:
            head.append(f'{p} (MSE)')
            rule.append('---')
    rows = ['| ' + ' | '.join(head) + ' |', '| ' + ' | '.join(rule) + ' |']
    for name in models:
        cells = [f'`{name}`']
        for p in protocols:
            r = results[p][name]
            if PROTOCOLS[p].metric == 'success':
                cells += [f'{r["success"]:.1%} ± {r["success_stderr"]:.1%}',
                          f'{r["success_strict"]:.1%}']
            else:
                cells.append(f'{r["mse"]:.4f}')
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)
