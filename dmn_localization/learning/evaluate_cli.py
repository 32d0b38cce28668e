"""
``dmn_evaluate``: the paper's protocol on held-out test environments, any model by name.

    dmn_evaluate --data data/rooms-test --checkpoint models/dmn-pf-rooms.pt \
        --baselines closest-context uninformed --episodes 1000 --out results/rooms.json

Prints a table (success rate of one-step and sequential global localization, MSE of
tracking), writes it as JSON, with ``--results RESULTS.md --section NAME`` as a section
of a Markdown file (the command beside it), and with ``--plots DIR`` the belief heat
maps and the success rate against t and against K of the particle filter models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Dict, List, Optional

from dmn_localization.core.allocator import keep_freed_memory
from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint
from dmn_localization.core.device import resolve_device
from dmn_localization.core.models import NON_LEARNED_MODELS
from dmn_localization.data.dataset import Dataset, DatasetError
from dmn_localization.learning.evaluation import (evaluate, fixed_episodes, format_table,
                                                  markdown_table, Protocol, PROTOCOLS,
                                                  run_model)
from dmn_localization.learning.plots import plot_belief, plot_curves, success_curve
from dmn_localization.learning.train_config import SUCCESS_THRESHOLD
import torch


def _plots(models: Dict[str, object], dataset: Dataset, out: Path, episodes: int, seed: int,
           device: torch.device, frame_shift: float = 0.0,
           frame_turn: float = 0.0) -> List[Path]:
    frame = {'frame_shift': frame_shift, 'frame_turn': frame_turn}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    pf_models = {n: m for n, m in models.items() if m is not None and m.config.kind == 'pf'}
    for name, model in pf_models.items():
        data = fixed_episodes(dataset, PROTOCOLS['sequential-global'], 4, seed, model.config,
                              device, **frame)
        written.append(plot_belief(model, data, 0, out / f'belief-{name}.png', seed=seed))
    by_t, by_k = {}, {}
    for name, model in models.items():
        config = model.config if model is not None else next(
            m.config for m in models.values() if m is not None)
        steps = {}
        for t in (1, 2, 3, 4, 5):
            protocol = Protocol(f't{t}', t, 2048, 'global', 'success')
            data = fixed_episodes(dataset, protocol, episodes, seed, config, device, **frame)
            gen = torch.Generator(device=device).manual_seed(seed)
            steps[t] = run_model(model, name, data, protocol, gen)
        by_t[name] = success_curve(steps, SUCCESS_THRESHOLD)
        if model is not None and model.config.kind == 'pf':
            ks = {}
            protocol = PROTOCOLS['sequential-global']
            data = fixed_episodes(dataset, protocol, episodes, seed, config, device, **frame)
            for k in (64, 256, 1024, 2048, 4096):
                gen = torch.Generator(device=device).manual_seed(seed)
                ks[k] = run_model(model, name, data, protocol, gen, num_particles=k)
            by_k[name] = success_curve(ks, SUCCESS_THRESHOLD)
    written.append(plot_curves(by_t, 'time step t', out / 'success-vs-t.png',
                               f'global localization, K=2048, {dataset.domain}'))
    if by_k:
        written.append(plot_curves(by_k, 'particles K', out / 'success-vs-k.png',
                                   f'sequential global localization, t=5, {dataset.domain}'))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_evaluate``."""
    p = argparse.ArgumentParser(prog='dmn_evaluate', description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, required=True, help='test dataset directory')
    p.add_argument('--checkpoint', type=Path, nargs='*', default=[],
                   help='model checkpoints (best.pt of dmn_train, or models/*.pt)')
    p.add_argument('--baselines', nargs='*', default=list(NON_LEARNED_MODELS),
                   choices=list(NON_LEARNED_MODELS),
                   help='non-learned baselines to evaluate (default: all; --baselines with '
                   'no name: none)')
    p.add_argument('--episodes', type=int, default=1000, help='episodes per table cell')
    p.add_argument('--protocols', nargs='*', default=list(PROTOCOLS), choices=list(PROTOCOLS))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--frame-shift', type=float, default=0.0, metavar='S',
                   help="move each episode's world by a fixed random offset up to S "
                   'normalized units in x and y (as dmn_train --frame-shift S; 0: in place)')
    p.add_argument('--frame-turn', type=float, default=0.0, metavar='DEG',
                   help="turn each episode's world about its centre by a fixed random angle "
                   'up to DEG degrees (180: any heading; as dmn_train --frame-turn; 0: as is)')
    p.add_argument('--likelihood-scale', type=float, default=1.0, metavar='F',
                   help="multiply the particle filter models' log-likelihoods by F (1: the "
                   "paper's protocol; see docs/training.md)")
    p.add_argument('--mode-bandwidth', type=float, default=None, metavar='H',
                   help="estimate a particle filter's pose at the belief's densest place, "
                   'its particles smoothed by a kernel of H normalized units (default: the '
                   "weighted mean, the paper's protocol; see docs/findings.md)")
    p.add_argument('--out', type=Path, default=None, help='JSON file of the results')
    p.add_argument('--plots', type=Path, default=None, help='directory for the plots')
    p.add_argument('--results', type=Path, default=None, metavar='MD',
                   help='also write the table as section --section of this Markdown file '
                   '(e.g. RESULTS.md; other sections stay as they are)')
    p.add_argument('--section', default=None, metavar='NAME',
                   help='name of the section (lower-case words with dashes)')
    p.add_argument('--title', default=None, help='heading of the section')
    a = p.parse_args(argv)
    if (a.results is None) != (a.section is None):
        p.error('--results and --section go together')
    keep_freed_memory()  # batched episodes (EVAL_CHUNK): see core/allocator.py
    device = resolve_device(a.device)
    try:
        if a.likelihood_scale <= 0:
            raise ValueError(f'--likelihood-scale must be positive, got {a.likelihood_scale}')
        if a.mode_bandwidth is not None and a.mode_bandwidth <= 0:
            raise ValueError(f'--mode-bandwidth must be positive, got {a.mode_bandwidth}')
        dataset = Dataset(a.data)
        loaded = [load_checkpoint(path, device) for path in a.checkpoint]
        names = [checkpoint.name for checkpoint in loaded]
        # a model name given by several checkpoints labels none of them: their paths do
        models: Dict[str, object] = {
            name if names.count(name) == 1 else str(path): checkpoint.model
            for name, path, checkpoint in zip(names, a.checkpoint, loaded)}
        for name in a.baselines:
            models[name] = None
        if not models:
            raise ValueError('nothing to evaluate: give --checkpoint and/or --baselines')
        results = evaluate(models, dataset, a.episodes, a.seed, a.protocols, device,
                           frame_shift=a.frame_shift, likelihood_scale=a.likelihood_scale,
                           frame_turn=a.frame_turn, mode_bandwidth=a.mode_bandwidth)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f'dmn_evaluate: error: {exc}', file=sys.stderr)
        return 2
    print(f'{dataset.root} ({dataset.domain}, {len(dataset)} test environments), '
          f'{a.episodes} episodes per cell, seed {a.seed}'
          + (f', worlds moved up to {a.frame_shift}' if a.frame_shift else '')
          + (f', worlds turned up to {a.frame_turn:g} degrees' if a.frame_turn else '')
          + (f', log-likelihoods x{a.likelihood_scale:g}' if a.likelihood_scale != 1 else '')
          + (f", estimate at the belief's mode (bandwidth {a.mode_bandwidth:g})"
             if a.mode_bandwidth else ''))
    print(format_table(results))
    if a.results is not None:
        from dmn_localization.learning.results_md import write_section

        import shlex

        command = 'dmn_evaluate ' + shlex.join(sys.argv[1:] if argv is None else argv)
        described = (f'`{dataset.root}` ({dataset.domain}, {len(dataset)} environments), '
                     f'{a.episodes} episodes per cell, seed {a.seed}'
                     + (f', worlds moved up to {a.frame_shift:g}' if a.frame_shift else '')
                     + (f' and turned up to {a.frame_turn:g} degrees' if a.frame_turn
                        else ''))
        write_section(a.results, a.section, '\n'.join([
            f'## {a.title or a.section}', '', f'Made by `{command}`: {described}. Success: '
            'squared x-y error of the final estimate below 0.2 (normalized units); strict: '
            'x-y distance below 0.2.', '', markdown_table(results)]))
        print(f'written: section {a.section} of {a.results}')
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({'data': str(a.data), 'episodes': a.episodes,
                                     'seed': a.seed, 'frame_shift': a.frame_shift,
                                     'frame_turn': a.frame_turn,
                                     'likelihood_scale': a.likelihood_scale,
                                     'mode_bandwidth': a.mode_bandwidth,
                                     'checkpoints': [str(c) for c in a.checkpoint],
                                     'results': results}, indent=1) + '\n')
        print(f'written: {a.out}')
    if a.plots is not None:
        for path in _plots(models, dataset, a.plots, min(a.episodes, 300), a.seed, device,
                           a.frame_shift, a.frame_turn):
            print(f'plot: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
