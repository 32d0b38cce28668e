"""Preview of a dataset: sample views beside a top-down plot of where they were taken."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from dmn_localization.data.dataset import Dataset
from dmn_localization.data.worlds import PANEL_DEPTH, World
import numpy as np

VIEW_COLORS = ('tab:red', 'tab:blue', 'tab:green', 'tab:orange', 'tab:purple', 'tab:brown',
               'tab:pink', 'tab:olive')


def draw_world(ax: 'object', world: World) -> None:
    """Draw a world's floor plan and objects on a matplotlib axis (ROS frame, metres)."""
    from matplotlib.patches import Rectangle

    opened = set()  # (room index, side) left open by a connector
    for con in world.connectors:
        low, high = con.cells
        opened |= {(low, 'right'), (high, 'left')} if con.axis == 'x' else {
            (low, 'top'), (high, 'bottom')}
    walls = []
    for index, r in enumerate(world.rooms):
        sides = {'bottom': ((r.x_min, r.x_max), (r.y_min, r.y_min)),
                 'top': ((r.x_min, r.x_max), (r.y_max, r.y_max)),
                 'left': ((r.x_min, r.x_min), (r.y_min, r.y_max)),
                 'right': ((r.x_max, r.x_max), (r.y_min, r.y_max))}
        walls += [line for side, line in sides.items() if (index, side) not in opened]
    for con in world.connectors:  # a corridor has walls along its axis only
        r = con.rect
        if con.axis == 'x':
            walls += [((r.x_min, r.x_max), (r.y_min, r.y_min)),
                      ((r.x_min, r.x_max), (r.y_max, r.y_max))]
        else:
            walls += [((r.x_min, r.x_min), (r.y_min, r.y_max)),
                      ((r.x_max, r.x_max), (r.y_min, r.y_max))]
    for rect in list(world.rooms) + [c.rect for c in world.connectors]:
        ax.add_patch(Rectangle((rect.x_min, rect.y_min), rect.x_max - rect.x_min,
                               rect.y_max - rect.y_min, facecolor='0.93', edgecolor='none'))
    for xs, ys in walls:
        ax.plot(xs, ys, color='0.2', linewidth=1.5)
    for obj in world.objects:
        color = obj.color if obj.color not in ('none', 'grey') else 'dimgray'
        # a panel's long side runs along its yaw (0 or 90 degrees, against a wall)
        along_x = obj.kind != 'panel' or abs(math.cos(obj.yaw)) > 0.5
        sx = obj.size if along_x else PANEL_DEPTH
        sy = obj.size if obj.kind != 'panel' or not along_x else PANEL_DEPTH
        ax.add_patch(Rectangle((obj.x - sx / 2, obj.y - sy / 2), sx, sy,
                               facecolor=color, edgecolor='k', alpha=0.8))
        if obj.kind != 'panel':
            ax.annotate(obj.kind, (obj.x, obj.y), fontsize=6, ha='center', va='center')
    x_min, y_min, x_max, y_max = world.extent
    ax.set_xlim(x_min - 0.3, x_max + 0.3)
    ax.set_ylim(y_min - 0.3, y_max + 0.3)
    ax.set_aspect('equal')


def draw_poses(ax: 'object', poses: np.ndarray, colors: Sequence[str], length: float = 0.5,
               numbered: bool = True) -> None:
    """Draw poses ``(N, 3)`` as arrows in the given colours, numbered when asked."""
    for i, (x, y, yaw) in enumerate(poses):
        color = colors[i % len(colors)]
        ax.arrow(x, y, length * np.cos(yaw), length * np.sin(yaw), width=0.04,
                 head_width=0.2, color=color, length_includes_head=True)
        if numbered:
            ax.annotate(str(i), (x, y), fontsize=7, color=color, xytext=(3, 3),
                        textcoords='offset points')


def write_preview(root: Path, out: Path, environments: int = 3, views: int = 8,
                  seed: int = 0, indices: Optional[Sequence[int]] = None) -> Path:
    """Write a PNG: per row, ``views`` images of an environment and its top-down plot."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    dataset = Dataset(root)
    rng = np.random.default_rng(seed)
    if indices is None:
        indices = rng.choice(len(dataset), size=min(environments, len(dataset)), replace=False)
    views = min(views, dataset.views_per_env)
    fig = plt.figure(figsize=(1.3 * views + 4.5, 3.2 * len(indices)))
    grid = fig.add_gridspec(len(indices), views + 3)
    for row, env in enumerate(indices):
        data = dataset.environment(int(env))
        chosen = rng.choice(len(data.poses), size=views, replace=False)
        for col, view in enumerate(chosen):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(data.images[view], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(VIEW_COLORS[col % len(VIEW_COLORS)])
                spine.set_linewidth(3)
            ax.set_title(str(col), fontsize=8, color=VIEW_COLORS[col % len(VIEW_COLORS)])
        top = fig.add_subplot(grid[row, views:])
        draw_world(top, data.world)
        draw_poses(top, data.poses[chosen], VIEW_COLORS)
        top.set_title(f'{dataset.domain} env {int(env)} (seed {data.world.seed % 10**6}..), '
                      f'x right, y up [m]', fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
