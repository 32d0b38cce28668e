"""
Does a model lean on where the map's extent ends? The same episodes, the world moved.

Every pose of an episode (context poses, true poses, the global belief's box) is moved
by one offset of length ``--shift`` (normalized units, a random direction per episode);
odometry is relative and stays. The world is the same, only its place in the normalized
frame changes, and the success metric does not see the move. An egocentric model
(``dmn-pf``) answers exactly as before; a model that reads global coordinates
(``image-pf``, ``vector-pf``, ``dmn-pf`` with ``global_pose``) meets walls where
training never put them: in ``dmn_dataset`` worlds the extent is the outer wall.

    python -m dmn_localization.bench.extent_shift --data data/rooms-test
        --checkpoint models/dmn-pf-rooms.pt models/image-pf-rooms.pt --shift 0.3
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import sys
from typing import Dict, List, Optional

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.data.dataset import Dataset
from dmn_localization.learning.evaluation import fixed_episodes, PROTOCOLS, run_model
from dmn_localization.learning.train_config import SUCCESS_THRESHOLD
import numpy as np
import torch
from torch import nn, Tensor


def offsets_of(count: int, shift: float, seed: int) -> Tensor:
    """Offsets ``(count, 2)`` of length ``shift`` in random directions (fixed ``seed``)."""
    angles = np.random.default_rng(seed).uniform(-math.pi, math.pi, count)
    return torch.as_tensor(np.stack([np.cos(angles), np.sin(angles)], -1) * shift,
                           dtype=torch.float32)


def shift_errors(model: nn.Module, name: str, dataset: Dataset, episodes: int, shift: float,
                 seed: int = 0, protocol: str = 'sequential-global') -> Dict[str, np.ndarray]:
    """Return the final squared x-y errors ``{'in place': (E,), 'moved': (E,)}``."""
    spec = PROTOCOLS[protocol]
    data = fixed_episodes(dataset, spec, episodes, seed, model.config, torch.device('cpu'))
    out = {}
    for label, batch in (('in place', data),
                         ('moved', data.moved(offsets_of(len(data), shift, seed)))):
        out[label] = run_model(model, name, batch, spec, torch.Generator().manual_seed(seed))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Print sequential global success of each checkpoint in place and moved."""
    p = argparse.ArgumentParser(prog='extent_shift', description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, required=True, help='test dataset directory')
    p.add_argument('--checkpoint', type=Path, nargs='+', required=True)
    p.add_argument('--shift', type=float, default=0.3, help='normalized units (extent: 2)')
    p.add_argument('--episodes', type=int, default=1000)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', type=Path, default=None, help='JSON file of the results')
    a = p.parse_args(argv)
    dataset = Dataset(a.data)
    results = {}
    print(f'{a.data}: sequential global success, {a.episodes} episodes, world moved by '
          f'{a.shift} normalized units')
    for path in a.checkpoint:
        loaded = load_checkpoint(path)
        errors = shift_errors(loaded.model.eval(), loaded.name, dataset, a.episodes, a.shift,
                              a.seed)
        results[str(path)] = {k: float(np.mean(v < SUCCESS_THRESHOLD))
                              for k, v in errors.items()}
        r = results[str(path)]
        print(f'{str(path):<40} in place {r["in place"]:6.1%}   moved {r["moved"]:6.1%}')
    if a.out:
        a.out.write_text(json.dumps({'shift': a.shift, 'episodes': a.episodes,
                                     'results': results}, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
