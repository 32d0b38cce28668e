"""
``dmn_results`` (``make results``): train every model with one budget, evaluate, write RESULTS.md.

Every learned model gets the same training budget (samples), data and validation
protocol, and a learning rate chosen per model and domain by a small search: seed 0 is
trained at every rate of a grid for a short budget, the rate with the lowest validation
loss is continued to the full budget, and the further seeds train at that rate. Runs
resume, so the command can be interrupted and rerun until done (seed 0 of every model
first, then the further seeds). ``--no-train`` writes the table of the runs
finished so far. The table has the layout of the paper's Table 1 with the paper's number
beside ours in every cell, plus rows for variants the paper does not have; learning
curves show the validation success against samples of every run.

    dmn_results --data data --runs runs/results --out RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from dmn_localization.core.allocator import keep_freed_memory
from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.core.models import NON_LEARNED_MODELS
from dmn_localization.data.dataset import Dataset, DatasetError
from dmn_localization.learning.eval_cache import cache_key, cached_evaluate
from dmn_localization.learning.evaluation import evaluate
from dmn_localization.learning.results_plan import (DEFAULT_BUDGET, DOMAINS, ENTRIES,
                                                    finished, LR_GRID, ResultsPlan, run_dir,
                                                    run_state, Search, SEARCH_SAMPLES,
                                                    STRICT, TIE_MARGIN, VARIANTS)
from dmn_localization.learning.results_report import progress_lines, write_results
from dmn_localization.learning.run_control import RunInUseError, TrainingInterrupted
from dmn_localization.learning.run_pool import PoolStopped, RunPool
from dmn_localization.learning.run_record import read_record, write_record
from dmn_localization.learning.train_cli import parse_model_options
from dmn_localization.learning.train_config import (check_finish, check_lr_decay, MEMORY_FORMATS,
                                                    TrainConfig, TrainingError)
from dmn_localization.learning.trainer import train
import torch


def _train_one(config: TrainConfig, progress: bool, records: Optional[Path] = None) -> str:
    """Train one run, then record it in ``records`` (if given); say how it ended."""
    try:
        state = train(config, progress=progress)
    except RunInUseError as exc:
        return f'skipped: {exc}'
    if records is not None:
        write_record(Path(config.out), records)
    return f'{config.out}: {state["samples"]:,} samples' + (
        ', stopped early' if state['stopped_early'] else '')


def _train_entry(plan: ResultsPlan, model: str, domain: str, seed: int,
                 threads: Optional[int], progress: bool) -> List[str]:
    """
    Train one run of the schedule after the learning-rate search it needs.

    Runs in this process with ``threads`` threads if given; says how each run ended.
    """
    if threads is not None:
        os.environ['OMP_NUM_THREADS'] = str(threads)  # the trainer then keeps this setting
        torch.set_num_threads(threads)
    said: List[str] = []
    search = plan.search(model, domain) if plan.searched(model, domain) else None
    while search is not None and search.chosen is None:
        # the rates the search still compares, to its current horizon; a run already
        # there is not called again (its config would be rewritten with that budget)
        ended = [_train_one(plan.train_config(model, domain, 0, rate, search.horizon),
                            progress, plan.records)
                 for rate, score in search.scores.items() if score is None]
        said += ended
        search = plan.search(model, domain)
        if search.chosen is None and (not ended or any(e.startswith('skipped') for e in ended)):
            return said + [f'{model} {domain} s{seed}: waits for its learning-rate search']
    if finished(plan, model, domain, seed):  # in its directory, or by its record alone
        said.append(f'{model} {domain} s{seed}: finished')
    else:
        said.append(_train_one(plan.train_config(model, domain, seed), progress, plan.records))
    return said + _test_entry(plan, model, domain, seed)


def _test_entry(plan: ResultsPlan, model: str, domain: str, seed: int) -> List[str]:
    """
    Measure the test results of a finished run now and put them in its record.

    So a run's record is complete when it ends, not only when the table is next written:
    a machine lost later loses nothing of it. Nothing to do for a run still training or
    known by its record alone; results measured before are read from their cache.
    """
    best = run_dir(plan, model, domain, seed) / 'best.pt'
    if not best.exists() or not finished(plan, model, domain, seed):
        return []
    try:
        dataset = Dataset(plan.data / f'{domain}-test')
    except DatasetError as exc:  # training does not need it: measured with the table
        return [f'{model} {domain} s{seed}: not tested yet ({exc})']
    measured = _test_results(plan, domain, dataset, model, best)
    if not measured:
        return []
    cells = ', '.join(f"{protocol} {measured[protocol]['success']:.1%}"
                      for protocol in sorted(measured, reverse=True))  # sequential first
    return [f'{model} {domain} s{seed}: test set: {cells}']


def train_all(plan: ResultsPlan, progress: bool = True, jobs: int = 1,
              poll_s: float = 60.0) -> None:
    """
    Train (or resume, or skip when finished) every run of the plan, ``jobs`` at a time.

    Each scheduled run first completes the learning-rate search of its model and domain
    (seed 0 at every rate of the grid for ``search_samples``); the winner continues. With
    several jobs every run gets its share of the cores in a process of its own (one core
    each on a 2-core machine with ``jobs=2``). A run another process is training in is
    skipped (its cells stay empty until it has finished), and so is a further seed
    whose search another process is running. With several jobs one progress bar counts
    the plan's samples (:func:`plan_samples`, polled every ``poll_s`` seconds), and
    SIGINT or SIGTERM stops every run at its step (:mod:`.run_pool`): raises
    :class:`.run_pool.PoolStopped` once each has saved its state.
    """
    if jobs <= 1:
        for run in plan.schedule():
            for said in _train_entry(plan, *run, None, progress):
                print(f'dmn_results: {said}', flush=True)
        return
    from tqdm import tqdm

    threads = max(1, (os.cpu_count() or 1) // jobs)
    trained, planned = plan_samples(plan)
    # the runs train without bars of their own: one bar over the plan, from their logs
    with tqdm(total=planned, initial=trained, unit='sample', desc='dmn_results',
              disable=not progress, smoothing=0.05) as bar, RunPool(jobs) as pool:
        for run in plan.schedule():
            pool.submit(_train_entry, plan, *run, threads, False)
        while pool.busy:
            for ended in pool.ended(timeout=poll_s):
                for said in ended:
                    bar.write(f'dmn_results: {said}')
            # a resumed run drops the log rows past its checkpoint, so the count can dip
            # just after a start: the bar waits until it is passed instead of running
            # backwards (a negative rate and ETA)
            bar.update(max(0, plan_samples(plan)[0] - bar.n))


def _logged_samples(run: Path, records: Optional[Path] = None) -> int:
    """
    Return the samples of a run's last log row: cheap to poll.

    A run without a directory: the samples of its record in ``records``; 0 without one.
    """
    path = run / 'log.csv'
    if not path.exists():
        record = read_record(records, run)
        return 0 if record is None else int(record['counters']['samples'])
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]['samples']) if rows else 0


def plan_samples(plan: ResultsPlan) -> Tuple[int, int]:
    """
    Return the samples trained and planned over every run of the plan, search included.

    Read from the runs' logs (a run stopped early never reaches its planned samples).
    Seed 0 of a searched model trains each rate as far as the search compares it
    (``search_samples``, further for a tie; as it stands now), and the chosen run the
    rest of the budget; every other run the budget. Every run's finishing stage, if the
    plan has one, counts in full (one stopped early ends short of it).
    """
    trained = planned = 0
    full = plan.budget_samples + plan.finish_samples
    searches: Dict[Tuple[str, str], Search] = {}  # a search reads every search run
    for model, domain, seed in plan.schedule():
        if (model, domain) not in searches:
            searches[model, domain] = plan.search(model, domain)
        search = searches[model, domain]
        chosen = plan.lr_of(model, domain) if not plan.searched(model, domain) \
            else search.chosen
        if seed == 0 and plan.searched(model, domain):
            # the winner, still unknown, will train from its horizon to the budget
            planned += sum(search.reached.values()) + full - search.horizon
            for rate, reached in search.reached.items():
                cap = full if rate == chosen else reached
                trained += min(_logged_samples(run_dir(plan, model, domain, 0, rate),
                                               plan.records), cap)
            continue
        planned += full
        if chosen is not None:
            trained += min(_logged_samples(run_dir(plan, model, domain, seed, chosen),
                                           plan.records), full)
    return trained, planned


def status(plan: ResultsPlan) -> str:
    """
    Return how far the plan has got: the search and runs tables, samples, time left.

    The time left is the samples still to train over the throughput the plan's runs had
    so far (their samples over their wall time, validation included), in hours of one
    run's process: with ``--jobs N`` on N cores, divide by N.
    """
    trained, planned = plan_samples(plan)
    runs = [run_dir(plan, model, domain, seed, rate)
            for model, domain, seed, rate in plan.runs_with_rates() if rate is not None]
    states = [state for state in (run_state(run, plan.records) for run in runs)
              if state is not None]
    seconds = sum(state['elapsed_s'] for state in states)
    throughput = sum(state['samples'] for state in states) / seconds if seconds else 0.0
    if trained >= planned:
        left = 'nothing left to train'
    elif throughput:
        left = (f'about {(planned - trained) / throughput / 3600:.1f} hours of one '
                f"run's process at {throughput:.0f} samples/s (the runs' own rate so far)")
    else:
        left = 'no run has trained yet'
    return '\n'.join([*progress_lines(plan), '',
                      f'Trained {trained:,} of {planned:,} planned samples '
                      f'({trained / planned:.0%}); {left}.'])


def evaluate_all(plan: ResultsPlan,
                 fresh: bool = False) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    """
    Return ``{domain: {protocol: {entry: [success per seed]}}}`` on the test sets.

    Each protocol also appears with the suffix :data:`STRICT`: the success at the
    stricter reading (x-y distance below 0.2).

    Only finished runs are evaluated (all of them after :func:`train_all`). A run's
    results are kept in its directory (``test-eval.json``; the non-learned baselines' in
    ``--runs``) and measured again only when what they depend on changed
    (:mod:`.eval_cache`) or ``fresh`` is set; they then go into the run's record. A
    finished run known only by its record (its directory is gone) is reported with the
    results in the record if they were measured on the same test set, episodes and
    protocols, and left out with a warning otherwise (it cannot be measured again).
    """
    out: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for domain in plan.domains:
        dataset = Dataset(plan.data / f'{domain}-test')
        out[domain] = {}
        entries: List[Tuple[str, Optional[Path]]] = [
            (model, run_dir(plan, model, domain, seed) / 'best.pt')
            for model in plan.models for seed in plan.seeds_of(model, domain)
            if finished(plan, model, domain, seed)]
        entries += [(name, None) for name in NON_LEARNED_MODELS]
        for name, best in entries:
            measured = _test_results(plan, domain, dataset, name, best, fresh)
            for protocol, summary in (measured or {}).items():
                for suffix, value in (('', summary['success']),
                                      (STRICT, summary['success_strict'])):
                    out[domain].setdefault(protocol + suffix, {}).setdefault(
                        name, []).append(value)
    return out


def _test_results(plan: ResultsPlan, domain: str, dataset: Dataset, name: str,
                  best: Optional[Path],
                  fresh: bool = False) -> Optional[Dict[str, Dict[str, float]]]:
    """
    Return ``{protocol: summary}`` of ``name`` on ``dataset``, the test set of ``domain``.

    ``best`` is the checkpoint of a learned model's run (None for a non-learned
    baseline, whose results are kept in ``--runs``). Measured once and kept beside the
    run (``test-eval.json``, :mod:`.eval_cache`), then put in the run's record; a run
    known by its record alone is read from it (:func:`_recorded_results`).
    """
    protocols = ['sequential-global', 'one-step-global']
    gone = best is not None and not best.exists()  # known by its record alone
    key = cache_key(None if gone else best, name, dataset, plan.episodes, 0,
                    protocols, plan.frame_shift, plan.frame_turn)
    if gone:
        return _recorded_results(plan, best.parent, key)

    def measure() -> Dict[str, Dict[str, float]]:
        model = None if best is None else load_checkpoint(best).model
        results = evaluate({name: model}, dataset, plan.episodes, seed=0,
                           protocols=protocols, frame_shift=plan.frame_shift,
                           frame_turn=plan.frame_turn)
        return {protocol: per_model[name] for protocol, per_model in results.items()}

    cache = plan.runs / f'{name}-{domain}-test-eval.json' if best is None \
        else best.parent / 'test-eval.json'
    measured = cached_evaluate(cache, key, measure, fresh)
    if best is not None and plan.records is not None:
        write_record(best.parent, plan.records)
    return measured


def _recorded_results(plan: ResultsPlan, run: Path,
                      key: Dict[str, Any]) -> Optional[Dict[str, Dict[str, float]]]:
    """
    Return the test results in the record of ``run`` (whose directory is gone).

    They count if they were measured under ``key`` but for the checkpoint (gone with the
    directory; the record holds its hash) and the torch version; None with a warning on
    stderr otherwise, or when the record has none.
    """
    record = read_record(plan.records, run)
    kept = None if record is None else record.get('test_eval')
    loose = ('checkpoint_sha256', 'torch')
    if kept is not None and {k: v for k, v in kept['key'].items() if k not in loose} == \
            {k: v for k, v in key.items() if k not in loose}:
        return kept['results']
    print(f'dmn_results: {run.name}: finished by its record, but the record has no test '
          'results for this test set, episodes and protocols, and the checkpoint is gone '
          'to measure them: left out of the table (train it again: delete its record)',
          file=sys.stderr)
    return None


def record_all(plan: ResultsPlan) -> List[Path]:
    """Record every run of the plan that is at rest in its directory; return the records."""
    if plan.records is None:
        return []
    written = [write_record(run_dir(plan, model, domain, seed, rate), plan.records)
               for model, domain, seed, rate in plan.runs_with_rates() if rate is not None]
    return [path for path in written if path is not None]


def entry_options(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """
    Turn ``['dmn-pf:attention_prior=2']`` into ``{'dmn-pf': {'attention_prior': 2}}``.

    Raises ValueError for an unknown entry or a field its model does not have.
    """
    grouped: Dict[str, List[str]] = {}
    for item in items:
        entry, sep, option = item.partition(':')
        if not sep or entry not in ENTRIES:
            raise ValueError(f'--model-option {item!r}: expected ENTRY:FIELD=VALUE with an '
                             f'entry of {list(ENTRIES)}')
        grouped.setdefault(entry, []).append(option)
    return {entry: parse_model_options(VARIANTS.get(entry, (entry, {}))[0], options)
            for entry, options in grouped.items()}


def _keyed_values(items: List[str], flag: str, form: str, domain_required: bool,
                  parse: Callable[[str], Any]) -> Dict[str, Any]:
    """
    Turn ``flag``'s ``ENTRY[/DOMAIN]=VALUE`` items into ``{key: parse(VALUE)}``.

    ``form`` names the expected item in the error; ``parse`` raises ValueError for a bad
    value. Raises ValueError for an unknown entry or domain, a domain missing where
    ``domain_required``, a bad value, or a key given twice.
    """
    values: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        entry, slash, domain = key.partition('/')
        if not sep or entry not in ENTRIES or \
                ((slash or domain_required) and domain not in DOMAINS):
            raise ValueError(f'{flag} {item!r}: expected {form} with an entry of '
                             f'{list(ENTRIES)} and a domain of {list(DOMAINS)}')
        try:
            parsed = parse(value)
        except ValueError as exc:
            raise ValueError(f'{flag} {item!r}: {exc}') from None
        if key in values:
            raise ValueError(f'{flag} {item!r}: {key} is given twice')
        values[key] = parsed
    return values


def _positive_rate(value: str) -> float:
    """Return ``value`` as a learning rate; ValueError unless a positive number."""
    try:
        rate = float(value)
    except ValueError:
        rate = float('nan')
    if not rate > 0:  # also NaN
        raise ValueError('the rate must be a positive number')
    return rate


def _seed_list(value: str) -> Tuple[int, ...]:
    """Return ``'0,1,2'`` as ``(0, 1, 2)``; ValueError unless distinct, >= 0, 0 first."""
    try:
        seeds = tuple(int(seed) for seed in value.split(','))
    except ValueError:
        seeds = ()
    if not seeds or seeds[0] != 0 or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError('distinct seeds of at least 0, the first 0')
    return seeds


def fixed_rates(items: List[str]) -> Dict[str, float]:
    """
    Turn ``['vector-pf/mazes=1e-4']`` into ``{'vector-pf/mazes': 1e-4}`` (``--lr``).

    Raises ValueError for an unknown entry or domain, a rate that is not a positive
    number, or a pair given twice.
    """
    return _keyed_values(items, '--lr', 'ENTRY/DOMAIN=RATE', True, _positive_rate)


def seed_lists(items: List[str]) -> Dict[str, Tuple[int, ...]]:
    """
    Turn ``['image-pf=0,1,2', 'vector-regression/mazes=0']`` into training seeds (``--seeds``).

    The key is an entry, or ``'entry/domain'`` for one domain (which wins). Raises
    ValueError for an unknown entry or domain, seeds that are not distinct integers of at
    least 0 beginning with 0 (seed 0 is every entry's first run), or a key given twice.
    """
    return _keyed_values(items, '--seeds', 'ENTRY[/DOMAIN]=S,S,...', False, _seed_list)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_results``."""
    p = argparse.ArgumentParser(prog='dmn_results', description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=Path('data'),
                   help='directory with {rooms,mazes}-{train,val,test} datasets')
    p.add_argument('--runs', type=Path, default=Path('runs/results'))
    p.add_argument('--budget-samples', type=int, default=DEFAULT_BUDGET)
    p.add_argument('--episodes', type=int, default=1000)
    p.add_argument('--models', nargs='*', default=list(ENTRIES), choices=list(ENTRIES),
                   help='learned models and variants (default: all)')
    p.add_argument('--domains', nargs='*', default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument('--one-seed', action='store_true', help='seed 0 only (a quick table)')
    p.add_argument('--seeds', action='append', default=[], metavar='ENTRY[/DOMAIN]=S,S,...',
                   help='the training seeds of one entry, on every domain or on one '
                   '(repeatable; default: 0, 1 and 2 for THREE_SEEDS, else 0), e.g. '
                   'vector-regression/mazes=0')
    p.add_argument('--val-every-samples', type=int, default=100_000)
    p.add_argument('--val-episodes', type=int, default=1000)
    p.add_argument('--frame-shift', type=float, default=0.0, metavar='S',
                   help="move each episode's world by up to S normalized units in training "
                   'and test (dmn_train --frame-shift)')
    p.add_argument('--frame-turn', type=float, default=0.0, metavar='DEG',
                   help="turn each episode's world about its centre by up to DEG degrees in "
                   'training and test (dmn_train --frame-turn)')
    p.add_argument('--lr-decay-factor', type=float, default=TrainConfig.lr_decay_factor,
                   metavar='F', help='every run multiplies its learning rate by F when its '
                   'validation loss has not improved for more than --lr-decay-patience '
                   "validations (dmn_train --lr-decay-factor; 1: constant, the paper's "
                   'protocol); the runs are named for it')
    p.add_argument('--lr-decay-patience', type=int, default=TrainConfig.lr_decay_patience,
                   metavar='N', help='dmn_train --lr-decay-patience of every run')
    p.add_argument('--finish-samples', type=int, default=TrainConfig.finish_samples,
                   metavar='N', help='every run, after its budget, trains N samples more from '
                   'its best checkpoint with a fresh Adam at its rate times --finish-lr-factor '
                   "(dmn_train --finish-samples; 0: none, the paper's protocol); the runs are "
                   'named for it')
    p.add_argument('--finish-lr-factor', type=float, default=TrainConfig.finish_lr_factor,
                   metavar='F', help='dmn_train --finish-lr-factor of every run')
    p.add_argument('--model-option', action='append', default=[],
                   metavar='ENTRY:FIELD=VALUE', help='a model config field of one entry, e.g. '
                   'dmn-pf:attention_prior=2 (dmn_train --model-option; repeatable); its runs '
                   'are named for it')
    p.add_argument('--jobs', type=int, default=1,
                   help='runs trained at a time, each in its own process with its share of '
                   'the cores (2 on a 2-core machine: one core each)')
    p.add_argument('--tie-margin', type=float, default=TIE_MARGIN,
                   help='rates whose search score is within this share of the best are '
                   'trained another --search-samples and compared again (0: the lowest '
                   'score at the first horizon wins)')
    p.add_argument('--fresh-eval', action='store_true',
                   help='measure every run on the test sets again instead of reading the '
                   'results kept beside it (they are measured again anyway when the '
                   'checkpoint, the test data or the evaluation changed)')
    p.add_argument('--no-train', action='store_true',
                   help='train nothing: the table of the runs finished so far')
    p.add_argument('--status', action='store_true',
                   help='train and evaluate nothing, write nothing: print how far the plan '
                   'has got (search, runs, samples, time left) and exit')
    p.add_argument('--lr-grid', type=float, nargs='+', default=list(LR_GRID), metavar='LR',
                   help='learning rates searched for every model and domain (one rate: no '
                   'search)')
    p.add_argument('--lr', action='append', default=[], metavar='ENTRY/DOMAIN=LR',
                   help='the learning rate of one entry on one domain, fixed: no search for '
                   'it (repeatable), e.g. vector-pf/mazes=1e-4')
    p.add_argument('--search-samples', type=int, default=SEARCH_SAMPLES,
                   help='samples of each search run (a multiple of --val-every-samples)')
    p.add_argument('--memory-format', choices=MEMORY_FORMATS, default='contiguous',
                   help='memory layout of new runs (dmn_train --memory-format; a run keeps '
                   'the one it began with): contiguous reproduces the published table value '
                   'for value, channels_last trains about 1.2x faster and rounds differently')
    p.add_argument('--records', type=Path, default=Path('results'),
                   help="directory of the finished runs' records (a few kB each; commit it "
                   'with RESULTS.md): a run whose directory is gone is read from it, not '
                   'trained again')
    p.add_argument('--out', type=Path, default=Path('RESULTS.md'))
    a = p.parse_args(argv)
    keep_freed_memory()  # the evaluation's batches: see core/allocator.py
    if a.jobs < 1:
        p.error(f'--jobs must be at least 1, got {a.jobs}')
    try:
        check_lr_decay(a.lr_decay_factor, a.lr_decay_patience)
        check_finish(a.finish_samples, a.finish_lr_factor, a.lr_decay_factor)
        model_options = entry_options(a.model_option)
        rates = fixed_rates(a.lr)
        seeds = seed_lists(a.seeds)
    except (TrainingError, ValueError) as exc:
        p.error(str(exc))
    if min(a.lr_grid) <= 0 or len(set(a.lr_grid)) != len(a.lr_grid):
        p.error(f'--lr-grid needs distinct positive rates, got {a.lr_grid}')
    if not 0 < a.search_samples <= a.budget_samples or \
            a.search_samples % a.val_every_samples:
        # a search run ends with a validation; off the validation interval the chosen
        # run would not continue as an uninterrupted run
        p.error(f'--search-samples must be a multiple of --val-every-samples '
                f'({a.val_every_samples}) and at most --budget-samples, '
                f'got {a.search_samples}')
    if a.one_seed and seeds:
        p.error('--one-seed and --seeds: choose one')
    plan = ResultsPlan(a.data, a.runs, a.budget_samples, a.models,
                       {m: (0,) for m in a.models} if a.one_seed else seeds or None,
                       rates or None,
                       a.episodes, a.domains, a.val_every_samples, a.val_episodes,
                       frame_shift=a.frame_shift, frame_turn=a.frame_turn,
                       lr_decay_factor=a.lr_decay_factor,
                       lr_decay_patience=a.lr_decay_patience, lr_grid=tuple(a.lr_grid),
                       finish_samples=a.finish_samples, finish_lr_factor=a.finish_lr_factor,
                       model_options=model_options,
                       search_samples=a.search_samples, tie_margin=a.tie_margin,
                       memory_format=a.memory_format, records=a.records)
    if a.status:
        print(status(plan))
        return 0
    start = time.monotonic()
    if not a.no_train:
        try:
            train_all(plan, jobs=a.jobs)
        except (TrainingInterrupted, PoolStopped) as exc:  # saved: the same command goes on
            print(f'dmn_results: {exc}', file=sys.stderr)
            return exc.exit_code
    record_all(plan)
    results = evaluate_all(plan, fresh=a.fresh_eval)
    command = 'dmn_results ' + ' '.join(argv if argv is not None else sys.argv[1:])
    print(write_results(plan, results, a.out, command.strip(),
                        None if a.no_train else time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
