"""
The tables ``dmn_results`` trains and reports: every run, its budget, rate and seeds.

:data:`TABLES` holds the paper's Table 1 under three protocols (docs/training.md): ``4m``
(RESULTS.md), ``3m`` and ``in-place`` (their numbers in docs/findings.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from dmn_localization.core.models import LEARNED_MODELS

#: The paper's Table 1: entry -> (Rooms sequential, Mazes sequential, Rooms one-step,
#: Mazes one-step) success.
PAPER_TABLE1 = {
    'dmn-pf': (0.956, 0.759, 0.935, 0.270), 'dmn-regression': (0.972, 0.399, 0.605, 0.190),
    'image-pf': (0.940, 0.694, 0.905, 0.211), 'image-regression': (0.096, 0.101, 0.051, 0.055),
    'vector-pf': (0.929, 0.404, 0.881, 0.132), 'vector-regression': (0.098, 0.168, 0.056, 0.073),
    'closest-context': (0.110, 0.393, 0.114, 0.345), 'uninformed': (0.017, 0.033, 0.029, 0.037),
}
#: The table's columns: (domain, evaluation protocol), in the paper's order.
COLUMNS = (('rooms', 'sequential-global'), ('mazes', 'sequential-global'),
           ('rooms', 'one-step-global'), ('mazes', 'one-step-global'))
#: Rows the paper does not have: entry -> (model, config fields other than the defaults).
#: DMN reading the particle's heading in the map frame (docs/findings.md).
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'dmn-pf-heading': ('dmn-pf', {'match_score': False, 'ego_value_dim': 32,
                                  'global_heading': True}),
}
LABELS = {
    'dmn-pf': 'View-embedding, PF-DMN (ours)', 'dmn-regression': 'View-embedding, regression',
    'dmn-pf-heading': 'View-embedding + map heading, PF-DMN (not in the paper)',
    'image-pf': 'Latent image, PF', 'image-regression': 'Latent image, regression',
    'vector-pf': 'Latent vector, PF', 'vector-regression': 'Latent vector, regression',
    'closest-context': 'Closest context', 'uninformed': 'Uninformed estimate',
}


@dataclass
class ResultsTable:
    """One protocol of the paper's table: what every run trains with, and where it lives."""

    name: str
    runs: Path  # run directories (not committed)
    records: Path  # one JSON record per finished run (committed)
    budget_samples: int
    models: Sequence[str] = tuple(LEARNED_MODELS)
    domains: Sequence[str] = ('rooms', 'mazes')
    #: 'entry' or 'entry/domain' (which wins) -> training seeds; default seed 0
    seeds: Dict[str, Sequence[int]] = field(default_factory=dict)
    #: 'entry' or 'entry/domain' -> learning rate; default 3e-4
    lr: Dict[str, float] = field(default_factory=dict)
    #: entry -> config fields other than their defaults, over a variant's own
    model_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    finish_samples: int = 0  # dmn_train --finish-samples (0: the paper's protocol)
    finish_lr_factor: float = 1 / 3
    frame_shift: float = 0.0  # worlds moved up to this, in training and test
    frame_turn: float = 0.0  # ... and turned up to this many degrees
    val_every_samples: int = 100_000
    val_episodes: int = 1000
    patience: int = 8
    episodes: int = 1000  # test episodes per cell

    def _get(self, table: Dict[str, Any], entry: str, domain: str, default: Any) -> Any:
        return table.get(f'{entry}/{domain}', table.get(entry, default))

    def seeds_of(self, entry: str, domain: str) -> Sequence[int]:
        return self._get(self.seeds, entry, domain, (0,))

    def rate(self, entry: str, domain: str) -> float:
        return self._get(self.lr, entry, domain, 3e-4)

    def options(self, entry: str) -> Dict[str, Any]:
        return {**VARIANTS.get(entry, (entry, {}))[1], **self.model_options.get(entry, {})}

    def schedule(self) -> List[Tuple[str, str, int]]:
        """Every run ``(entry, domain, seed)``: seed 0 of all first, then the others."""
        most = max(len(self.seeds_of(m, d)) for m in self.models for d in self.domains)
        return [(m, d, self.seeds_of(m, d)[i]) for i in range(most) for d in self.domains
                for m in self.models if i < len(self.seeds_of(m, d))]

    def run_name(self, entry: str, domain: str, seed: int) -> str:
        """``dmn-pf-rooms-lr0.0003-attention_prior2-shift0.5-turn180-finish300000x0.333-s0``."""
        tags = ''.join(f'-{k}{str(v).lower() if isinstance(v, bool) else f"{v:g}"}'
                       for k, v in sorted(self.model_options.get(entry, {}).items()))
        tags += f'-shift{self.frame_shift:g}' if self.frame_shift else ''
        tags += f'-turn{self.frame_turn:g}' if self.frame_turn else ''
        tags += (f'-finish{self.finish_samples}x{self.finish_lr_factor:.3g}'
                 if self.finish_samples else '')
        return f'{entry}-{domain}-lr{self.rate(entry, domain):g}{tags}-s{seed}'

    def train_args(self, entry: str, domain: str, seed: int, data: Path) -> List[str]:
        """Return the ``dmn_train`` arguments of one run (it resumes an existing run)."""
        options = [f'--model-option={k}={str(v).lower() if isinstance(v, bool) else v}'
                   for k, v in self.options(entry).items()]
        return ['--model', VARIANTS.get(entry, (entry,))[0],
                '--train', str(Path(data) / f'{domain}-train'),
                '--val', str(Path(data) / f'{domain}-val'),
                '--out', str(Path(self.runs) / self.run_name(entry, domain, seed)),
                '--budget-samples', str(self.budget_samples),
                '--lr', f'{self.rate(entry, domain):g}', '--seed', str(seed),
                '--val-every-samples', str(self.val_every_samples),
                '--val-episodes', str(self.val_episodes), '--patience', str(self.patience),
                '--frame-shift', f'{self.frame_shift:g}', '--frame-turn', f'{self.frame_turn:g}',
                '--finish-samples', str(self.finish_samples),
                '--finish-lr-factor', repr(self.finish_lr_factor), *options]


_MOVED: Dict[str, Any] = {
    'frame_shift': 0.5, 'frame_turn': 180.0, 'finish_samples': 300_000,
    'model_options': {'dmn-pf': {'attention_prior': 2.0}}, 'lr': {'vector-pf/mazes': 1e-4},
    'seeds': {'dmn-pf': (0, 1, 2), 'dmn-regression/rooms': (0, 1, 2),
              'vector-pf/mazes': (0, 1, 2)}}
TABLES = {
    # worlds moved and turned, 4M samples and a finishing stage: RESULTS.md
    '4m': ResultsTable('4m', Path('runs/results-4m'), Path('results-4m'), 4_000_000, **_MOVED),
    # the same at 3M samples
    '3m': ResultsTable('3m', Path('runs/results'), Path('results'), 3_000_000, **_MOVED),
    # worlds in place, 1M samples, with the heading variant
    'in-place': ResultsTable(
        'in-place', Path('runs/results'), Path('results'), 1_000_000,
        models=(*LEARNED_MODELS, *VARIANTS), lr={'vector-pf/mazes': 1e-4},
        seeds={'dmn-pf': (0, 1, 2), 'image-pf': (0, 1, 2), 'dmn-pf-heading': (0, 1, 2),
               'vector-regression/mazes': (0, 1, 2)}),
}
