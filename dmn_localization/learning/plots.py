"""Plots of evaluation: the belief as a heat map (paper Figs. 5, 6), success vs t and K."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

from dmn_localization.core.inference import FilterSettings, localize
from dmn_localization.core.particle_filter import turn_about
from dmn_localization.learning.batches import TensorEpisodes
import numpy as np
import torch
from torch import nn


def _pyplot():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def plot_belief(model: nn.Module, episodes: TensorEpisodes, index: int, path: Path,
                num_particles: int = 2048, seed: int = 0) -> Path:
    """
    Plot the belief of a global localization episode after each step as a heat map.

    Particle weights are summed over yaw into a 2D histogram over the (normalized) map;
    context poses are green, the true query pose blue, as in the paper's figures.
    """
    plt = _pyplot()
    part = episodes.select(slice(index, index + 1))
    map_ctx = model.prepare_map(model.embed_views(part.context_images, part.context_poses),
                                part.context_poses)
    generator = torch.Generator().manual_seed(seed)
    result = localize(model, map_ctx, part.query_images, part.motions, part.global_belief(),
                      FilterSettings(num_particles=num_particles), generator, keep_beliefs=True)
    steps = len(result.beliefs)
    fig, axes = plt.subplots(1, steps, figsize=(3.2 * steps, 3.3), squeeze=False)
    b = part.bounds[0].cpu().numpy()
    if part.turn is not None:  # the histogram over the box around the turned extent
        corners = torch.tensor([[[b[0], b[1], 0.0], [b[2], b[1], 0.0], [b[2], b[3], 0.0],
                                 [b[0], b[3], 0.0]]])
        turned = turn_about(corners, corners[:, :, :2].mean(1), part.turn[:1].cpu())
        b = np.concatenate([turned[0, :, :2].min(0).values.numpy(),
                            turned[0, :, :2].max(0).values.numpy()])
    for t, (ax, belief) in enumerate(zip(axes[0], result.beliefs)):
        xy = belief.particles[0, :, :2].cpu().numpy()
        w = belief.weights[0].cpu().numpy()
        ax.hist2d(xy[:, 0], xy[:, 1], bins=40, range=[[b[0], b[2]], [b[1], b[3]]], weights=w,
                  cmap='Reds')
        for x, y, yaw in part.context_poses[0].cpu().numpy():
            ax.arrow(x, y, 0.12 * np.cos(yaw), 0.12 * np.sin(yaw), color='green', width=0.015)
        x, y, yaw = part.truth[0, t].cpu().numpy()
        ax.arrow(x, y, 0.15 * np.cos(yaw), 0.15 * np.sin(yaw), color='blue', width=0.02)
        est = result.estimates[0, t].cpu().numpy()
        ax.plot(est[0], est[1], 'kx', markersize=8)
        ax.set_title(f't={t + 1}', fontsize=9)
        ax.set_aspect('equal')
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f'{model.config.name}: belief (red), contexts (green), truth (blue), '
                 'estimate (x)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(curves: Dict[str, Dict[int, float]], xlabel: str, path: Path,
                title: str) -> Path:
    """Plot success rate curves ``{model: {x: success}}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.3))
    for name, points in curves.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker='o', label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('success rate')
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def success_curve(errors_for: Dict[int, Sequence[float]], threshold: float) -> Dict[int, float]:
    """Turn ``{x: squared errors}`` into ``{x: success rate}``."""
    return {x: float(np.mean(np.asarray(e) < threshold)) for x, e in errors_for.items()}
