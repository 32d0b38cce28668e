"""
How a DMN checkpoint reads its map: feature sizes and attention statistics.

    python -m dmn_localization.learning.attention_report --data data/mazes-val \
        --checkpoint runs/results/dmn-pf-mazes-lr0.0003-s1/best.pt [...]

On fixed episodes of ``--data`` (four context views, one query) and ``--particles``
poses drawn uniformly over each world's extent and all headings, it prints per
checkpoint:

* ``view rms`` / ``query rms``: root mean square of the view and query features;
* ``logit var``: variance of the attention logits over particles and views, and the
  share of it that depends on the particle (the rest is one fixed preference per view:
  a share near 0 means the attention no longer reads the pose);
* ``aligned``: the mean attention weight on the view whose heading is closest to the
  particle's (0.25 for four views if the attention ignores the headings);
* ``max weight``: the mean largest weight (1: a one-hot attention).

It is the measurement behind "Stuck seeds" in docs/findings.md: the runs that stay
stuck show features that grew or shrank and an attention that saturated or looks away.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
import sys
from typing import Optional, Sequence

from dmn_localization.core import geometry
from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint, samples_behind
from dmn_localization.core.dmn import DMN
from dmn_localization.core.particle_filter import uniform_belief
from dmn_localization.data.dataset import Dataset, DatasetError
from dmn_localization.learning.batches import TensorEpisodes
from dmn_localization.learning.evaluation import fixed_episodes, PROTOCOLS
import torch


@dataclass(frozen=True)
class AttentionStats:
    """What :func:`attention_stats` measures (see the module docstring)."""

    view_rms: float
    query_rms: float
    logit_variance: float
    particle_share: float
    aligned_weight: float
    max_weight: float


@torch.no_grad()
def attention_stats(model: DMN, episodes: TensorEpisodes, particles: int,
                    seed: int = 0) -> AttentionStats:
    """Measure ``model`` on the first query of ``episodes`` with uniform particles."""
    if not isinstance(model, DMN) or model.config.position_attention:
        raise ValueError(f'{model.config.name}: the report reads the per-view attention of DMN')
    features = model.embed_views(episodes.context_images, episodes.context_poses)
    query_images = episodes.query_images[:, 0]
    map_ = model.prepare_map(features, episodes.context_poses)
    query = model.prepare_query(query_images)
    poses = uniform_belief(episodes.bounds, particles, torch.Generator().manual_seed(seed),
                           episodes.turn).particles
    ego = geometry.egocentric(poses, map_.poses)  # (B, K, N, 4)
    logits = model.attention.logits_fast(map_.key_partials, ego, query.key)  # (B, K, N)
    total = logits.var(dim=(1, 2))
    per_particle = (logits - logits.mean(dim=1, keepdim=True)).var(dim=(1, 2))
    weights = torch.softmax(logits, dim=2)
    aligned = torch.nn.functional.one_hot(ego[..., 2].argmax(dim=2), weights.shape[2])
    return AttentionStats(
        view_rms=float(features.pow(2).mean().sqrt()),
        query_rms=float(query.features.pow(2).mean().sqrt()),
        logit_variance=float(total.mean()),
        particle_share=float(per_particle.mean() / total.mean().clamp_min(1e-12)),
        aligned_weight=float((weights * aligned).sum(dim=2).mean()),
        max_weight=float(weights.max(dim=2).values.mean()))


def format_row(name: str, samples: Optional[int], stats: AttentionStats) -> str:
    """One printed line per checkpoint."""
    trained = '?' if samples is None else f'{samples / 1e6:.2f}M'
    return (f'{name}  ({trained} samples)\n'
            f'  view rms {stats.view_rms:.2f}, query rms {stats.query_rms:.2f}; logit var '
            f'{stats.logit_variance:.2f} (particle share {stats.particle_share:.2f}); '
            f'aligned {stats.aligned_weight:.2f}, max weight {stats.max_weight:.2f}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the report; 2 on bad input."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    p.add_argument('--data', required=True, type=Path, help='dataset directory (validation)')
    p.add_argument('--checkpoint', required=True, nargs='+', help='DMN checkpoints')
    p.add_argument('--episodes', type=int, default=200)
    p.add_argument('--particles', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    if a.episodes < 1 or a.particles < 1:
        print('error: --episodes and --particles must be at least 1', file=sys.stderr)
        return 2
    try:
        dataset = Dataset(a.data)
        for path in a.checkpoint:
            loaded = load_checkpoint(path)
            episodes = fixed_episodes(dataset, PROTOCOLS['one-step-global'], a.episodes,
                                      a.seed, loaded.model.config, torch.device('cpu'))
            stats = attention_stats(loaded.model, episodes, a.particles, a.seed)
            print(format_row(path, samples_behind(loaded.metadata), stats), flush=True)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
