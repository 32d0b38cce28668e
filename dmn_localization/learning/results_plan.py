"""
The plan of ``make results``: which runs, where they live, and the learning-rate search.

:class:`ResultsPlan` names every training run of the results table (entry, domain,
seed, learning rate) and its directory; the rate of a model on a domain is fixed by
hand or chosen by a small search over seed 0's short runs. Reading a run's state and
learning curve is here too: the search is decided from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dmn_localization.core.models import LEARNED_MODELS
from dmn_localization.learning.run_record import at_rest, Curve, read_curve, read_record
from dmn_localization.learning.train_config import TrainConfig
from dmn_localization.learning.trainer import load_state

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
#: Rows the paper does not have: name -> (model, config fields other than their
#: defaults). The heading variant is DMN as it learns Mazes from scratch (docs/findings.md):
#: its value branch reads the particle's heading in the map frame.
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'dmn-pf-heading': ('dmn-pf', {'match_score': False, 'ego_value_dim': 32,
                                  'global_heading': True}),
}
#: Everything ``make results`` trains: the paper's learned models, then the variants.
ENTRIES = tuple(LEARNED_MODELS) + tuple(VARIANTS)
LABELS = {
    'dmn-pf': 'View-embedding, PF-DMN (ours)', 'dmn-regression': 'View-embedding, regression',
    'dmn-pf-heading': 'View-embedding + map heading, PF-DMN (not in the paper)',
    'image-pf': 'Latent image, PF', 'image-regression': 'Latent image, regression',
    'vector-pf': 'Latent vector, PF', 'vector-regression': 'Latent vector, regression',
    'closest-context': 'Closest context', 'uninformed': 'Uninformed estimate',
}
DOMAINS = ('rooms', 'mazes')
#: Suffix of a protocol's results at the stricter success reading (x-y distance < 0.2)
STRICT = '/strict'
#: Learning rates searched for every model and domain (the shipped models' first stages
#: used 3e-4; lower rates helped later, see the model cards).
LR_GRID = (1e-3, 3e-4, 1e-4)
#: Samples of each search run: two validations. A short horizon favours rates that learn
#: fast early; it is what this machine affords (RESULTS.md says so).
SEARCH_SAMPLES = 200_000
#: Rates whose score is within this share of the best one's are a tie: they train
#: another :data:`SEARCH_SAMPLES` and are compared again. A run's validation loss moves
#: by a median 2.9 % from one validation to the next (the table's seed-0 runs), so a
#: lead below 1 % is noise. 0: the lowest score wins at the first horizon.
TIE_MARGIN = 0.01
#: Training samples of every run: about an hour of one CPU core for PF-DMN or the latent
#: image map; a plan of many runs takes longer than a machine may stay up, which is why
#: runs resume.
DEFAULT_BUDGET = 1_000_000
#: Entries trained with 3 seeds (the paper's practice for its PF-DMN and the strongest
#: baseline), on every domain or, as ``'entry/domain'``, on one; every other with seed 0.
#: The latent image PF is the strongest PF baseline on both domains; on Mazes the latent
#: vector regression's seed 0 is the strongest baseline of all (70.0 % sequential against
#: the image PF's 69.2 % in RESULTS-in-place.md), so it trains 3 seeds there too.
THREE_SEEDS = ('dmn-pf', 'image-pf', 'dmn-pf-heading', 'vector-regression/mazes')
#: A run is at a plateau when its best validation loss fell by less than
#: :data:`PLATEAU_GAIN` (relative) over its last :data:`PLATEAU_WINDOW` samples, or when
#: it stopped early (patience: no lower loss in that many validations).
PLATEAU_WINDOW = 300_000
PLATEAU_GAIN = 0.01


def pair(model: str, domain: str) -> str:
    """Return ``'model/domain'``: the key of a per-domain setting (``lr``, ``seeds``)."""
    return f'{model}/{domain}'


@dataclass
class Search:
    """
    Where the learning-rate search of one model and domain stands.

    ``chosen`` is None while runs are missing; ``horizon`` is the samples the last
    comparison is at, ``scores`` the scores there of the rates still compared (None: not
    trained so far), ``reached`` how far each rate of the grid is (or was) compared.
    """

    chosen: Optional[float]
    horizon: int
    scores: Dict[float, Optional[float]]
    reached: Dict[float, int]


@dataclass
class ResultsPlan:
    """What ``make results`` trains and evaluates."""

    data: Path
    runs: Path
    budget_samples: int = DEFAULT_BUDGET
    #: entries: learned models and :data:`VARIANTS`
    models: Sequence[str] = ENTRIES
    #: ``'entry'`` or ``'entry/domain'`` (which wins) -> training seeds
    seeds: Dict[str, Sequence[int]] = None
    #: ``'model/domain'`` -> a learning rate fixed by hand (no search for that pair)
    lr: Dict[str, float] = None
    episodes: int = 1000
    domains: Sequence[str] = DOMAINS
    val_every_samples: int = 100_000
    val_episodes: int = 1000
    patience: int = 8
    #: entry -> config fields other than their defaults (``dmn_train --model-option``),
    #: over a variant's own
    model_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: every world moved by up to this in training and test (``dmn_train --frame-shift``)
    frame_shift: float = 0.0
    #: every world turned by up to this many degrees in training and test (``--frame-turn``)
    frame_turn: float = 0.0
    #: the rate schedule of every run (``dmn_train --lr-decay-factor``, ``--lr-decay-patience``;
    #: a factor of 1, the default, is a constant rate, the paper's protocol)
    lr_decay_factor: float = TrainConfig.lr_decay_factor
    lr_decay_patience: int = TrainConfig.lr_decay_patience
    #: a finishing stage for every run after the budget (``dmn_train --finish-samples``,
    #: ``--finish-lr-factor``; 0 samples, the default, is the paper's protocol); the
    #: learning-rate search compares rates before it
    finish_samples: int = TrainConfig.finish_samples
    finish_lr_factor: float = TrainConfig.finish_lr_factor
    #: the learning-rate search: rates, and samples of each seed-0 run at each rate
    lr_grid: Sequence[float] = LR_GRID
    search_samples: int = SEARCH_SAMPLES
    tie_margin: float = TIE_MARGIN
    #: memory layout of new runs (``dmn_train --memory-format``; a run keeps the one it
    #: began with). Contiguous: the table's runs of fc61c61 trained so, and a run in the
    #: other layout rounds differently and takes another path (README), so this default
    #: reproduces them value for value on the CPU model they trained on (another CPU model
    #: rounds differently too); ``channels_last`` trains about 1.2x faster.
    memory_format: str = 'contiguous'
    #: where finished runs are recorded (:mod:`.run_record`; committed with RESULTS.md), read
    #: for a run whose directory is gone; None: the run directories alone
    records: Optional[Path] = None

    def run_suffix(self) -> str:
        """
        Return what sets this plan's run names apart from those of the table in place.

        Empty for worlds in place at a constant rate; else ``-shiftS``, ``-turnD``,
        ``-decayFpN`` and ``-finishNxF`` for what differs, so a plan's runs, and their
        records, are never taken for runs of another plan.
        """
        parts = []
        if self.frame_shift:
            parts.append(f'-shift{self.frame_shift:g}')
        if self.frame_turn:
            parts.append(f'-turn{self.frame_turn:g}')
        if self.lr_decay_factor != 1.0:
            parts.append(f'-decay{self.lr_decay_factor:g}p{self.lr_decay_patience}')
        if self.finish_samples:
            parts.append(f'-finish{self.finish_samples}x{self.finish_lr_factor:.3g}')
        return ''.join(parts)

    def seeds_of(self, model: str, domain: str) -> Sequence[int]:
        """Return the training seeds of ``model`` on ``domain`` (3 for :data:`THREE_SEEDS`)."""
        key = pair(model, domain)
        default = (0, 1, 2) if model in THREE_SEEDS or key in THREE_SEEDS else (0,)
        seeds = self.seeds or {}
        return seeds.get(key, seeds.get(model, default))

    def searched(self, model: str, domain: str) -> bool:
        """Return whether the rate of ``model`` on ``domain`` comes from a search."""
        return pair(model, domain) not in (self.lr or {}) and len(self.lr_grid) > 1

    def search_rates(self, model: str, domain: str) -> Sequence[float]:
        """Return the rates seed 0 of ``model`` on ``domain`` trains at (one without search)."""
        if self.searched(model, domain):
            return tuple(self.lr_grid)
        return ((self.lr or {}).get(pair(model, domain), self.lr_grid[0]),)

    def _score(self, model: str, domain: str, rate: float, horizon: int) -> Optional[float]:
        """Return seed 0's lowest validation loss up to ``horizon``; None until it got there."""
        run = run_dir(self, model, domain, 0, rate)
        state = run_state(run, self.records)
        done = state is not None and (state['samples'] >= horizon
                                      or bool(state['stopped_early']))
        losses = [loss for samples, loss, _ in learning_curve(run, self.records)
                  if samples <= horizon]
        return min(losses) if done and losses else None

    def search_scores(self, model: str, domain: str,
                      horizon: Optional[int] = None) -> Dict[float, Optional[float]]:
        """
        Return the search's score of every rate of ``model`` on ``domain``.

        The score is the lowest validation loss of seed 0 up to ``horizon`` (default
        :attr:`search_samples`); None while that run has not got so far.
        """
        return {rate: self._score(model, domain, rate, horizon or self.search_samples)
                for rate in self.search_rates(model, domain)}

    def search(self, model: str, domain: str) -> Search:
        """
        Run the learning-rate search of ``model`` on ``domain`` on the runs as they stand.

        Every rate is scored at :attr:`search_samples`; the lowest score wins (the first
        of the grid on an exact tie) unless other rates score within :attr:`tie_margin`
        of it: those tied rates are scored again :attr:`search_samples` later, and so on
        up to the budget, where the lowest wins.
        """
        rates = list(self.search_rates(model, domain))
        horizon = self.search_samples
        reached = {rate: horizon for rate in rates}
        while True:
            scores = {rate: self._score(model, domain, rate, horizon) for rate in rates}
            if any(score is None for score in scores.values()):
                return Search(None, horizon, scores, reached)
            best = min(rates, key=lambda rate: (scores[rate], rates.index(rate)))
            tied = [rate for rate in rates if rate == best
                    or scores[rate] < scores[best] * (1 + self.tie_margin)]
            if len(tied) == 1 or horizon >= self.budget_samples:
                return Search(best, horizon, scores, reached)
            rates, horizon = tied, min(horizon + self.search_samples, self.budget_samples)
            reached.update(dict.fromkeys(tied, horizon))

    def lr_of(self, model: str, domain: str) -> Optional[float]:
        """
        Return the learning rate of ``model`` on ``domain``.

        It is fixed by the plan, or the choice of :meth:`search`; None while the search
        has runs to finish.
        """
        if not self.searched(model, domain):
            return self.search_rates(model, domain)[0]
        return self.search(model, domain).chosen

    def rate(self, model: str, domain: str, lr: Optional[float] = None) -> float:
        """Return ``lr``, else :meth:`lr_of`; an error while the search is unfinished."""
        rate = self.lr_of(model, domain) if lr is None else lr
        if rate is None:
            raise ValueError(f'the learning-rate search of {model} on {domain} is unfinished')
        return rate

    def train_config(self, model: str, domain: str, seed: int, lr: Optional[float] = None,
                     budget_samples: Optional[int] = None) -> TrainConfig:
        """
        Return the training run of entry ``model`` on ``domain`` with ``seed``.

        ``lr`` defaults to :meth:`lr_of` (an error while the search is unfinished),
        ``budget_samples`` to the plan's budget; a search run (given a budget) has no
        finishing stage. A run trained by hand with ``dmn_train`` and the same fields
        (``--out`` the run directory) is adopted by ``make results``: it resumes, or is
        done.
        """
        rate = self.rate(model, domain, lr)
        search_run = budget_samples is not None
        name, options = VARIANTS.get(model, (model, {}))
        return TrainConfig(
            name, str(self.data / f'{domain}-train'), str(self.data / f'{domain}-val'),
            str(run_dir(self, model, domain, seed, rate)),
            self.budget_samples if budget_samples is None else budget_samples,
            lr=rate, val_every_samples=self.val_every_samples,
            val_episodes=self.val_episodes, patience=self.patience, seed=seed,
            model_options={**options, **self.model_options.get(model, {})},
            frame_shift=self.frame_shift, frame_turn=self.frame_turn,
            lr_decay_factor=self.lr_decay_factor, lr_decay_patience=self.lr_decay_patience,
            finish_samples=0 if search_run else self.finish_samples,
            finish_lr_factor=self.finish_lr_factor, memory_format=self.memory_format)

    def runs_with_rates(self) -> List[Tuple[str, str, int, Optional[float]]]:
        """
        Return every run ``(entry, domain, seed, rate)`` in :meth:`schedule` order.

        Seed 0 comes once per rate of its search; ``rate`` is None for a further seed
        whose search is unfinished.
        """
        runs = []
        for model, domain, seed in self.schedule():
            rates = self.search_rates(model, domain) if seed == 0 \
                else (self.lr_of(model, domain),)
            runs += [(model, domain, seed, rate) for rate in rates]
        return runs

    def schedule(self) -> List[Tuple[str, str, int]]:
        """
        Return every ``(entry, domain, seed)``: seed 0 of all first, then the others.

        The further seeds of the paper's models (the spread across seeds) come
        before those of :data:`VARIANTS`, the rows the paper does not have.
        """
        most = max(len(self.seeds_of(m, d)) for m in self.models for d in self.domains)
        runs = [(model, domain, self.seeds_of(model, domain)[i]) for i in range(most)
                for domain in self.domains for model in self.models
                if i < len(self.seeds_of(model, domain))]
        # a stable sort: the order above within each group
        return sorted(runs, key=lambda run: run[2] > 0 and run[0] in VARIANTS)


def options_tag(options: Dict[str, Any]) -> str:
    """Return ``-attention_prior2`` for ``{'attention_prior': 2}``: a run name's part."""
    return ''.join(f'-{key}{str(value).lower() if isinstance(value, bool) else f"{value:g}"}'
                   for key, value in sorted(options.items()))


def run_dir(plan: ResultsPlan, model: str, domain: str, seed: int,
            lr: Optional[float] = None) -> Path:
    """
    Return the directory of one training run (at the plan's rate unless ``lr``).

    Named for the model options the plan gives the entry, so a run with them is never
    taken for one without (the trainer would refuse it).
    """
    rate = plan.rate(model, domain, lr)
    tag = options_tag(plan.model_options.get(model, {}))
    return plan.runs / f'{model}-{domain}-lr{rate:g}{tag}{plan.run_suffix()}-s{seed}'


def run_state(run: Path, records: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """
    Return the trainer's counters of a run (samples, elapsed_s, ...), None if not begun.

    Read from the run's directory while it has a saved state, else from its record in
    ``records`` (:mod:`.run_record`), with ``memory_format`` and ``machines`` (None: not
    recorded) added in both cases.
    """
    state = load_state(run)
    if state is None:
        state = read_record(records, run)
    return None if state is None else {**state['counters'],
                                       'memory_format': state.get('memory_format'),
                                       'machines': state.get('machines')}


def finished(plan: ResultsPlan, model: str, domain: str, seed: int) -> bool:
    """Return whether a run has spent its budget or stopped early (its best.pt is final)."""
    if plan.lr_of(model, domain) is None:
        return False
    state = run_state(run_dir(plan, model, domain, seed), plan.records)
    return state is not None and at_rest(state, plan.budget_samples, plan.finish_samples)


def learning_curve(run: Path, records: Optional[Path] = None) -> Curve:
    """
    Return ``(samples, validation loss, validation global success)`` of a run's log.

    From the run's directory while it has a saved state, else from its record in
    ``records``; empty when the run has not validated yet.
    """
    if (run / 'last.pt').exists() or (run / 'log.csv').exists():
        return read_curve(run)
    record = read_record(records, run)
    return [] if record is None else record['curve']


def recent_gain(curve: Sequence[Tuple[int, float, float]],
                window: int = PLATEAU_WINDOW) -> Optional[float]:
    """
    Return how much a run's best validation loss fell over its last ``window`` samples.

    ``curve`` as :func:`learning_curve` returns it. The gain is relative: ``(b0 - b1) /
    b0`` with ``b0`` the lowest loss up to ``window`` samples before the last validation
    and ``b1`` the lowest of all; 0 when the last ``window`` samples found nothing lower.
    None while no validation lies ``window`` samples before the last.
    """
    if not curve:
        return None
    end = curve[-1][0]
    before = [loss for samples, loss, _ in curve if samples <= end - window]
    if not before:
        return None
    earlier = min(before)
    return (earlier - min(loss for _, loss, _ in curve)) / earlier
