"""
``dmn_results`` (``make results``): train every model with one budget, evaluate, write RESULTS.md.

Every learned model gets the same training budget (samples), data and validation
protocol; runs resume, so the command can be interrupted and rerun until done. The
table has the layout of the paper's Table 1 with the paper's number beside ours in
every cell; learning curves show the validation success against samples of every run.

    dmn_results --data data --runs runs/results --budget-samples 2400000 --out RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass, field
import json
from pathlib import Path
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.core.models import LEARNED_MODELS, NON_LEARNED_MODELS
from dmn_localization.data.dataset import Dataset
from dmn_localization.learning.evaluation import evaluate
from dmn_localization.learning.trainer import train, TrainConfig
from dmn_localization.results_md import write_section
import numpy as np
import torch

#: The paper's Table 1: model -> (rooms sequential, mazes sequential, rooms one-step,
#: mazes one-step) success rates.
PAPER_TABLE1 = {
    'dmn-pf': (0.956, 0.759, 0.935, 0.270),
    'dmn-regression': (0.972, 0.399, 0.605, 0.190),
    'image-pf': (0.940, 0.694, 0.905, 0.211),
    'image-regression': (0.096, 0.101, 0.051, 0.055),
    'vector-pf': (0.929, 0.404, 0.881, 0.132),
    'vector-regression': (0.098, 0.168, 0.056, 0.073),
    'closest-context': (0.110, 0.393, 0.114, 0.345),
    'uninformed': (0.017, 0.033, 0.029, 0.037),
}
LABELS = {
    'dmn-pf': 'View-embedding, PF-DMN (ours)', 'dmn-regression': 'View-embedding, regression',
    'image-pf': 'Latent image, PF', 'image-regression': 'Latent image, regression',
    'vector-pf': 'Latent vector, PF', 'vector-regression': 'Latent vector, regression',
    'closest-context': 'Closest context', 'uninformed': 'Uninformed estimate',
}
DOMAINS = ('rooms', 'mazes')
#: Learning rate of every run unless a plan names another: the rate the shipped models'
#: first stages used (lower rates later help; see the model cards).
DEFAULT_LR = 3e-4


@dataclass
class ResultsPlan:
    """What ``make results`` trains and evaluates."""

    data: Path
    runs: Path
    budget_samples: int
    models: Sequence[str] = tuple(LEARNED_MODELS)
    seeds: Dict[str, Sequence[int]] = None
    lr: Dict[str, float] = None
    episodes: int = 1000
    domains: Sequence[str] = DOMAINS
    val_every_samples: int = 100_000
    val_episodes: int = 1000
    patience: int = 8
    #: model -> config fields other than their defaults (``dmn_train --model-option``)
    model_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: every world moved by up to this in training and test (``dmn_train --frame-shift``)
    frame_shift: float = 0.0

    def seeds_of(self, model: str) -> Sequence[int]:
        """Return the training seeds of ``model`` (3 for PF-DMN and image PF, else 1)."""
        default = (0, 1, 2) if model in ('dmn-pf', 'image-pf') else (0,)
        return (self.seeds or {}).get(model, default)

    def lr_of(self, model: str, domain: str) -> float:
        """Return the learning rate of ``model`` on ``domain`` (3e-4 unless the plan says)."""
        return (self.lr or {}).get(f'{model}/{domain}', DEFAULT_LR)

    def train_config(self, model: str, domain: str, seed: int) -> TrainConfig:
        """
        Return the training run of ``model`` on ``domain`` with ``seed``.

        A run trained by hand with ``dmn_train`` and the same fields (``--out`` the run
        directory) is adopted by ``make results``: it resumes, or is done.
        """
        return TrainConfig(
            model, str(self.data / f'{domain}-train'), str(self.data / f'{domain}-val'),
            str(run_dir(self, model, domain, seed)), self.budget_samples,
            lr=self.lr_of(model, domain), val_every_samples=self.val_every_samples,
            val_episodes=self.val_episodes, patience=self.patience, seed=seed,
            model_options=dict(self.model_options.get(model, {})), frame_shift=self.frame_shift)


def run_dir(plan: ResultsPlan, model: str, domain: str, seed: int) -> Path:
    """Return the run directory of one training run."""
    return plan.runs / f'{model}-{domain}-s{seed}'


def train_all(plan: ResultsPlan, progress: bool = True) -> None:
    """Train (or resume, or skip when finished) every run of the plan."""
    for domain in plan.domains:
        for model in plan.models:
            for seed in plan.seeds_of(model):
                train(plan.train_config(model, domain, seed), progress=progress)


def learning_curve(run: Path) -> List[tuple]:
    """Return ``(samples, validation global success)`` of a run's log."""
    with open(run / 'log.csv', newline='') as f:
        return [(int(r['samples']), float(r['val_global_success']))
                for r in csv.DictReader(f) if r['val_global_success']]


def plot_learning_curves(plan: ResultsPlan, domain: str, path: Path) -> Path:
    """Plot the validation success against samples of every run of ``domain``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for model in plan.models:
        for seed in plan.seeds_of(model):
            curve = learning_curve(run_dir(plan, model, domain, seed))
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, label=f'{model} s{seed}', alpha=0.8)
    ax.set_xlabel('training samples')
    ax.set_ylabel('validation one-step global success')
    ax.set_title(f'{domain}: learning curves', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_all(plan: ResultsPlan) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    """Return ``{domain: {protocol: {model: [success per seed]}}}`` on the test sets."""
    out: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for domain in plan.domains:
        dataset = Dataset(plan.data / f'{domain}-test')
        out[domain] = {}
        for seed_index in range(max(len(plan.seeds_of(m)) for m in plan.models)):
            models: Dict[str, Optional[torch.nn.Module]] = {}
            for model in plan.models:
                seeds = plan.seeds_of(model)
                if seed_index < len(seeds):
                    best = run_dir(plan, model, domain, seeds[seed_index]) / 'best.pt'
                    models[model] = load_checkpoint(best).model
            if seed_index == 0:
                models.update(dict.fromkeys(NON_LEARNED_MODELS))
            results = evaluate(models, dataset, plan.episodes, seed=0,
                               protocols=['sequential-global', 'one-step-global'],
                               frame_shift=plan.frame_shift)
            for protocol, per_model in results.items():
                for model, summary in per_model.items():
                    out[domain].setdefault(protocol, {}).setdefault(model, []).append(
                        summary['success'])
    return out


def _cell(values: Sequence[float], paper: float) -> str:
    if not values:
        return f'– ({paper:.1%})'
    mean = float(np.mean(values))
    spread = f' ± {np.std(values):.1%}' if len(values) > 1 else ''
    return f'{mean:.1%}{spread} ({paper:.1%})'


def write_results(plan: ResultsPlan, results: Dict, out: Path, command: str,
                  wall_time_s: float) -> Path:
    """Write RESULTS.md: the table, budgets, seeds, data sizes and learning curves."""
    figures = out.parent / 'docs'
    figures.mkdir(parents=True, exist_ok=True)
    lines = ['## Global localization success (paper Table 1 layout)', '',
             f'Made by `{command}` (the code at this commit).', '',
             "Ours, with the paper's number in parentheses. Mean ± standard deviation over "
             'training seeds where there are several.', '',
             '| map | algorithm | Rooms sequential | Mazes sequential | Rooms one-step | '
             'Mazes one-step |', '| --- | --- | --- | --- | --- | --- |']
    for model in list(plan.models) + list(NON_LEARNED_MODELS):
        paper = PAPER_TABLE1[model]
        cells = []
        for (domain, protocol), p in zip(
                [('rooms', 'sequential-global'), ('mazes', 'sequential-global'),
                 ('rooms', 'one-step-global'), ('mazes', 'one-step-global')], paper):
            values = results.get(domain, {}).get(protocol, {}).get(model, [])
            cells.append(_cell(values, p))
        map_name, _, algorithm = LABELS[model].partition(', ')
        lines.append(f'| {map_name} | {algorithm or "–"} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Protocol and budget', '',
              f'- Training budget: {plan.budget_samples:,} samples for every learned model '
              '(single-step tracking episodes, Nc=4, K=32, Adam, batch 16), validation every '
              f'{plan.val_every_samples:,} samples, early stop after {plan.patience} '
              'validations without a lower loss, best checkpoint evaluated.',
              '- Learning rates: ' + ', '.join(
                  f'{m} {plan.lr_of(m, d):g} ({d})' for d in plan.domains for m in plan.models),
              '- Model options: ' + (', '.join(
                  f'{m} {o}' for m, o in plan.model_options.items() if m in plan.models)
                  or 'none (every model at its default config)'),
              '- Seeds: ' + ', '.join(f'{m} {list(plan.seeds_of(m))}' for m in plan.models),
              f'- Evaluation: {plan.episodes} episodes per cell on held-out test environments, '
              'K=2048, t=5 (sequential) and t=1 (one-step); success = squared x-y error '
              'below 0.2 in normalized units.',
              '- Worlds in their normalized frame: ' + (
                  f'moved by a random offset up to {plan.frame_shift:g} in x and y, in '
                  'training and test (`--frame-shift`), so the extent does not say where the '
                  'walls are.' if plan.frame_shift else
                  'in place: the extent is the outer wall, which models reading global '
                  'coordinates can learn (see the README).'),
              f'- Hardware: {platform.machine()} {platform.processor() or ""}, '
              f'{torch.get_num_threads()} threads, torch {torch.__version__}; wall time of '
              f'this command: {wall_time_s / 3600:.1f} h.']
    for domain in plan.domains:
        for split in ('train', 'val', 'test'):
            d = Dataset(plan.data / f'{domain}-{split}')
            lines.append(f'- {domain} {split}: {len(d)} environments x {d.views_per_env} views')
    lines += ['', '## Learning curves', '']
    for domain in plan.domains:
        path = plot_learning_curves(plan, domain, figures / f'learning-curves-{domain}.png')
        lines.append(f'![{domain}](docs/{path.name})')
    write_section(out, 'learning', '\n'.join(lines))
    (out.with_suffix('.json')).write_text(json.dumps(results, indent=1) + '\n')
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_results``."""
    p = argparse.ArgumentParser(prog='dmn_results', description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=Path('data'),
                   help='directory with {rooms,mazes}-{train,val,test} datasets')
    p.add_argument('--runs', type=Path, default=Path('runs/results'))
    p.add_argument('--budget-samples', type=int, default=2_400_000)
    p.add_argument('--episodes', type=int, default=1000)
    p.add_argument('--models', nargs='*', default=list(LEARNED_MODELS),
                   choices=list(LEARNED_MODELS))
    p.add_argument('--domains', nargs='*', default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument('--one-seed', action='store_true', help='seed 0 only (a quick table)')
    p.add_argument('--val-every-samples', type=int, default=100_000)
    p.add_argument('--val-episodes', type=int, default=1000)
    p.add_argument('--frame-shift', type=float, default=0.0, metavar='S',
                   help="move each episode's world by up to S normalized units in training "
                   'and test (dmn_train --frame-shift)')
    p.add_argument('--out', type=Path, default=Path('RESULTS.md'))
    a = p.parse_args(argv)
    plan = ResultsPlan(a.data, a.runs, a.budget_samples, a.models,
                       {m: (0,) for m in a.models} if a.one_seed else None, None, a.episodes,
                       a.domains, a.val_every_samples, a.val_episodes,
                       frame_shift=a.frame_shift)
    start = time.monotonic()
    train_all(plan)
    results = evaluate_all(plan)
    command = 'dmn_results ' + ' '.join(argv if argv is not None else sys.argv[1:])
    print(write_results(plan, results, a.out, command.strip(), time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
