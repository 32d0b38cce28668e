"""
``dmn_results`` (``make results``): train every run of a table, evaluate, write RESULTS.md.

    dmn_results --table 4m --jobs 2 --out RESULTS.md

The runs are those of a table of :mod:`.results_table`, each trained by ``dmn_train``
(which resumes) in a process of its own, ``--jobs`` at a time. A finished run is
recorded in the table's records directory (its counters, validation curve and test
results), committed with the table: ``--no-train`` writes the table from the records
alone, on a machine that never trained it.
"""

from __future__ import annotations

import argparse
from collections import Counter
import csv
import ctypes
from dataclasses import replace
import json
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.core.models import NON_LEARNED_MODELS
from dmn_localization.data.dataset import Dataset, file_sha256, save_json
from dmn_localization.learning.evaluation import evaluate
from dmn_localization.learning.provenance import machine
from dmn_localization.learning.results_md import write_section
from dmn_localization.learning.results_table import (COLUMNS, LABELS, PAPER_TABLE1,
                                                     ResultsTable, TABLES)
from dmn_localization.learning.trainer import load_state
import numpy as np

RECORD_VERSION = 1  # bump when a record's fields change meaning
EVAL_VERSION = 1  # bump when the evaluation's numbers would change for the same inputs
PROTOCOLS = ['one-step-global', 'sequential-global']
STRICT = '/strict'  # suffix of a protocol at the stricter reading (x-y distance < 0.2)
PLATEAU_WINDOW, PLATEAU_GAIN = 300_000, 0.01  # best loss fell < 1 % over the last 300k


def read_curve(run: Path) -> List[List[float]]:
    """Read ``[samples, validation loss, validation global success]`` of a log.csv."""
    if not (Path(run) / 'log.csv').exists():
        return []
    with open(Path(run) / 'log.csv', newline='') as f:
        return [[int(r['samples']), float(r['val_loss']), float(r['val_global_success'])]
                for r in csv.DictReader(f) if r['val_global_success']]


def read_record(table: ResultsTable, name: str) -> Optional[Dict[str, Any]]:
    """Read the record of run ``name``; None if there is none, ValueError if foreign."""
    path = Path(table.records) / f'{name}.json'
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get('version') != RECORD_VERSION:
        raise ValueError(f'{path}: not a run record of version {RECORD_VERSION}')
    return record


def run_state(table: ResultsTable, name: str) -> Optional[Dict[str, Any]]:
    """Return ``{'counters', 'curve', 'machines', 'record'}`` of a run; None if not begun."""
    state = load_state(Path(table.runs) / name)
    if state is not None:
        return {'counters': state['counters'], 'curve': read_curve(Path(table.runs) / name),
                'machines': state.get('machines'), 'record': False}
    record = read_record(table, name)
    return None if record is None else {**record, 'record': True}


def at_rest(table: ResultsTable, counters: Dict[str, Any]) -> bool:
    """Tell whether a run spent its budget or stopped early (then its finishing stage too)."""
    if not table.finish_samples:
        return counters['samples'] >= table.budget_samples or bool(counters['stopped_early'])
    return counters.get('stage', 0) == 1 and (bool(counters['stopped_early']) or counters[
        'samples'] >= counters['finish_start'] + table.finish_samples)


def finished(table: ResultsTable, name: str) -> bool:
    """Tell whether run ``name`` is at rest, by its directory or its record."""
    state = run_state(table, name)
    return state is not None and at_rest(table, state['counters'])


def write_record(table: ResultsTable, name: str) -> None:
    """Record a run at rest (counters, curve, provenance, test results) in the records."""
    run = Path(table.runs) / name
    state = load_state(run)
    if state is None or not at_rest(table, state['counters']):
        return
    test = run / 'test-eval.json'
    Path(table.records).mkdir(parents=True, exist_ok=True)
    save_json(Path(table.records) / f'{name}.json', {
        'version': RECORD_VERSION, 'run': name, 'budget_samples': table.budget_samples,
        'finish_samples': table.finish_samples, 'config': state['config'],
        'counters': dict(state['counters']), 'memory_format': state.get('memory_format'),
        'code_revisions': state.get('code_revisions'), 'machines': state.get('machines'),
        'curve': read_curve(run),
        'test_eval': json.loads(test.read_text()) if test.exists() else None})


def measure_results(table: ResultsTable, data: Path, entry: str, domain: str,
                    seed: Optional[int], fresh: bool = False) -> Optional[Dict[str, Any]]:
    """
    Return ``{protocol: summary}`` of a finished run (``seed`` None: a baseline).

    Measured once and kept beside the run (``test-eval.json``) while the key holds, or
    read from the record of a run whose directory is gone.
    """
    dataset = Dataset(Path(data) / f'{domain}-test')
    key = {'eval_version': EVAL_VERSION, 'model': entry, 'episodes': table.episodes,
           'test_manifest_sha256': file_sha256(Path(dataset.root) / 'manifest.json'),
           'seed': 0, 'protocols': PROTOCOLS,
           'frame_shift': table.frame_shift, 'frame_turn': table.frame_turn}
    if seed is None:
        best, cache = None, Path(table.runs) / f'{entry}-{domain}-test-eval.json'
    else:
        name = table.run_name(entry, domain, seed)
        best = Path(table.runs) / name / 'best.pt'
        cache = best.parent / 'test-eval.json'
        if not best.exists():
            kept = (read_record(table, name) or {}).get('test_eval')
            if kept and all(kept['key'].get(k) == v for k, v in key.items()):
                return kept['results']
            print(f'dmn_results: {name}: no test results of this key in its record, and no '
                  'checkpoint to measure them: left out', file=sys.stderr)
            return None
        key['checkpoint_sha256'] = file_sha256(best)
    stored = json.loads(cache.read_text()) if cache.exists() and not fresh else {}
    if {k: v for k, v in stored.get('key', {}).items() if k != 'torch'} == key:
        return stored['results']
    model = None if best is None else load_checkpoint(best).model
    measured = evaluate({entry: model}, dataset, table.episodes, seed=0,
                        protocols=key['protocols'], frame_shift=table.frame_shift,
                        frame_turn=table.frame_turn)
    results = {protocol: per_model[entry] for protocol, per_model in measured.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_json(cache, {'key': key, 'results': results})
    if seed is not None:
        write_record(table, table.run_name(entry, domain, seed))
    return results


def evaluate_all(table: ResultsTable, data: Path, fresh: bool = False) -> Dict[str, Any]:
    """``{domain: {protocol[/strict]: {entry: [success per finished seed]}}}``."""
    out: Dict[str, Any] = {}
    for domain in table.domains:
        runs = [(e, s) for e in table.models for s in table.seeds_of(e, domain)
                if finished(table, table.run_name(e, domain, s))]
        for entry, seed in runs + [(e, None) for e in NON_LEARNED_MODELS]:
            for protocol, summary in (measure_results(table, data, entry, domain, seed, fresh)
                                      or {}).items():
                for suffix, key in (('', 'success'), (STRICT, 'success_strict')):
                    out.setdefault(domain, {}).setdefault(protocol + suffix, {}).setdefault(
                        entry, []).append(summary[key])
    return out


def logged_samples(table: ResultsTable) -> Tuple[int, int]:
    """Count the samples trained so far and planned over every run (logs and records)."""
    full, total = table.budget_samples + table.finish_samples, 0
    for name in (table.run_name(*run) for run in table.schedule()):
        rows = (Path(table.runs) / name / 'log.csv').read_text().splitlines()[1:] \
            if (Path(table.runs) / name / 'log.csv').exists() else None
        record = read_record(table, name) if rows is None else None
        total += min(full, int(rows[-1].split(',')[1]) if rows else
                     record['counters']['samples'] if record else 0)
    return total, full * len(table.schedule())


def _own_process_group() -> None:
    """Run a ``dmn_train`` in a process group of its own, to get one signal: ``stop()``'s."""
    os.setsid()
    if sys.platform.startswith('linux'):  # and SIGTERM when dmn_results dies (SIGKILL)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def train_all(table: ResultsTable, data: Path, jobs: int = 1, progress: bool = True,
              poll_s: float = 5.0) -> int:
    """
    Train every run not at rest, ``jobs`` at a time; record and test each as it ends.

    Each ``dmn_train`` gets its share of the cores. SIGINT or SIGTERM stops every run at
    its step (each saves its state, to resume next time); returns 0, else 128 + signal.
    """
    from tqdm import tqdm

    pending = [run for run in table.schedule() if not finished(table, table.run_name(*run))]
    threads = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    running: Dict[subprocess.Popen, tuple] = {}
    stopped: List[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopped.append(signum)
        for process in running:
            process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    trained, planned = logged_samples(table)
    bar = tqdm(total=planned, initial=trained, unit='sample', smoothing=0.05,
               desc='dmn_results', disable=not progress)
    try:
        while (pending and not stopped) or running:
            while pending and not stopped and len(running) < jobs:
                run = pending.pop(0)
                command = [sys.executable, '-m', 'dmn_localization.learning.train_cli',
                           *table.train_args(*run, data), '--quiet']
                running[subprocess.Popen(command, preexec_fn=_own_process_group, env={
                    **os.environ, 'OMP_NUM_THREADS': threads})] = run
            time.sleep(poll_s)
            for process in [p for p in running if p.poll() is not None]:
                entry, domain, seed = running.pop(process)
                said = f'{entry} {domain} s{seed}: dmn_train exit {process.returncode}'
                if process.returncode == 0:
                    write_record(table, table.run_name(entry, domain, seed))
                    if (Path(data) / f'{domain}-test').exists():
                        results = measure_results(table, data, entry, domain, seed) or {}
                        said += ''.join(f', {p} {r["success"]:.1%}' for p, r in results.items())
                bar.write(f'dmn_results: {said}')
            bar.update(max(0, logged_samples(table)[0] - bar.n))
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + stopped[0] if stopped else 0


def _cell(values: List[float], paper: Optional[float], planned: int) -> str:
    theirs = '(–)' if paper is None else f'({paper:.1%})'
    if not values:
        return f'– {theirs}'
    spread = f' ± {np.std(values):.1%}' if len(values) > 1 else ''
    seeds = (f', {len(values)} of {planned} seeds' if len(values) < planned
             else f', {len(values)} seeds' if len(values) > 1 else '')
    return f'{float(np.mean(values)):.1%}{spread}{seeds} {theirs}'


def table_rows(table: ResultsTable, results: Dict[str, Any], suffix: str = '') -> List[str]:
    """Return the rows of the paper's Table 1 layout, the paper's number beside ours."""
    rows = ['| map | algorithm | Rooms sequential | Mazes sequential | Rooms one-step | '
            'Mazes one-step |', '| --- | --- | --- | --- | --- | --- |']
    for entry in [*table.models, *NON_LEARNED_MODELS]:
        paper = PAPER_TABLE1.get(entry, (None,) * 4)
        cells = [_cell(results.get(d, {}).get(p + suffix, {}).get(entry, []), paper[i],
                       len(table.seeds_of(entry, d)) if entry in table.models else 1)
                 for i, (d, p) in enumerate(COLUMNS)]
        kind, _, algorithm = LABELS[entry].partition(', ')
        rows.append(f'| {kind} | {algorithm or "–"} | ' + ' | '.join(cells) + ' |')
    return rows


def plateau(table: ResultsTable, state: Dict[str, Any]) -> str:
    """Return the plateau cell of a run: stopped early, patience, or the recent fall."""
    counters, curve = state['counters'], state['curve']
    if counters['stopped_early']:
        return 'yes (stopped early)'
    if table.finish_samples and counters.get('stage') == 1 and \
            counters['finish_start'] < table.budget_samples:
        return f'yes (patience at {counters["finish_start"] / 1e6:g}M)'
    before = [loss for s, loss, _ in curve if curve and s <= curve[-1][0] - PLATEAU_WINDOW]
    if not before:
        return '–'
    gain = (min(before) - min(loss for _, loss, _ in curve)) / min(before)
    return f'{"yes" if gain < PLATEAU_GAIN else "no"} ({100 * gain:.1f} %)'


def runs_rows(table: ResultsTable) -> List[str]:
    """One row per run: rate, samples, best validation loss, wall time, state, plateau."""
    rows = ['| run | learning rate | samples | best validation loss | wall time | state | '
            'plateau |', '| --- | --- | --- | --- | --- | --- | --- |']
    for entry, domain, seed in table.schedule():
        state = run_state(table, table.run_name(entry, domain, seed))
        head = f'| {entry} {domain} s{seed} | {table.rate(entry, domain):g} |'
        if state is None:
            rows.append(head + ' 0 | – | – | not begun | – |')
            continue
        c = state['counters']
        how = ('stopped early' if c['stopped_early'] else 'finished') \
            if at_rest(table, c) else 'in progress'
        best = f'{c["best_val_loss"]:.4f}' if math.isfinite(c['best_val_loss']) else '–'
        rows.append(head + f' {c["samples"]:,} | {best} | {c["elapsed_s"] / 3600:.2f} h | '
                    f'{how}{" (record)" if state["record"] else ""} | '
                    f'{plateau(table, state) if at_rest(table, c) else "–"} |')
    return rows


def plot_curves(table: ResultsTable, domain: str, path: Path) -> Path:
    """Plot validation loss and success against samples; a model's seeds share a colour."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for index, entry in enumerate(table.models):
        for n, seed in enumerate(table.seeds_of(entry, domain)):
            state = run_state(table, table.run_name(entry, domain, seed))
            if state and state['curve']:
                xs, losses, successes = zip(*state['curve'])
                for ax, ys in zip(axes, (losses, successes)):
                    ax.plot(xs, ys, color=colors[index % len(colors)], alpha=0.8, label=None
                            if n else f'{entry}, lr {table.rate(entry, domain):g}')
    for ax, label in zip(axes, ('validation loss (tracking)',
                                'validation one-step global success')):
        ax.set(xlabel='training samples', ylabel=label)
        ax.grid(alpha=0.3)
        if table.finish_samples:  # the finishing stage begins at a lower rate
            ax.axvline(table.budget_samples, color='grey', linestyle='--', linewidth=0.8)
    fig.suptitle(f'{domain}: learning curves' + (' (dashed: the finishing stage begins)'
                                                 if table.finish_samples else ''), fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc='lower center', ncol=3, fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0.0, 0.12, 1.0, 1.0))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(table: ResultsTable, data: Path, results: Dict[str, Any], out: Path,
                  command: str) -> Path:
    """Write the table's section of ``out`` (and ``out``'s .json twin, and the curves)."""
    figures = Path(out).parent / 'docs'
    figures.mkdir(parents=True, exist_ok=True)
    states = [run_state(table, table.run_name(*run)) or {} for run in table.schedule()]
    machines = Counter(m for state in states for m in state.get('machines') or [])
    sizes = [f'{d} {s} {len(x)} environments x {x.views_per_env} views'
             for d in table.domains for s in ('train', 'val', 'test')
             for x in [Dataset(Path(data) / f'{d}-{s}')]]
    lines = ['## Global localization success (paper Table 1 layout)', '',
             f'Made by `{command}` (table `{table.name}` of learning/results_table.py): '
             f'{table.budget_samples:,} training samples a run'
             + (f' and a finishing stage of {table.finish_samples:,} at '
                f'{table.finish_lr_factor:.3g} of the rate' if table.finish_samples else '')
             + f', worlds moved up to {table.frame_shift:g} and turned up to '
             f'{table.frame_turn:g} degrees in training and test; {table.episodes} test '
             'episodes a cell, K=2048, t=5 (sequential) and t=1 (one-step). Ours, with the '
             "paper's number in parentheses: mean ± standard deviation over seeds; a dash: "
             "not finished. docs/training.md says how the protocol differs from the paper's "
             'and why the numbers do.', '', *table_rows(table, results), '',
             '### The same runs at a stricter reading: x-y distance below 0.2', '',
             *table_rows(table, results, STRICT), '', '## Training runs', '',
             'Data: ' + '; '.join(sizes) + '. Trained on: ' + ', '.join(
                 f'{m} ({n} runs)' for m, n in sorted(machines.items())) + '. Plateau: '
             f'stopped early, or patience ended the main stage, or the best validation loss '
             f'fell by less than {100 * PLATEAU_GAIN:g} % over the last {PLATEAU_WINDOW:,} '
             'samples (the fall in parentheses).', '', *runs_rows(table), '',
             '## Learning curves', '']
    prefix = '' if Path(out).stem == 'RESULTS' else f'{Path(out).stem.lower()}-'
    for domain in table.domains:
        path = plot_curves(table, domain, figures / f'{prefix}learning-curves-{domain}.png')
        lines.append(f'![{domain}](docs/{path.name})')
    write_section(out, 'learning', '\n'.join(lines))
    Path(out).with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
    return Path(out)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--table', choices=list(TABLES), default='4m')
    p.add_argument('--data', type=Path, default=Path('data'), help='as `make data` writes it')
    p.add_argument('--runs', type=Path, default=None, help='run directories (default: the '
                   "table's)")
    p.add_argument('--jobs', type=int, default=1, help='runs trained at a time')
    p.add_argument('--out', type=Path, default=Path('RESULTS.md'))
    p.add_argument('--no-train', action='store_true', help='the table of the finished runs')
    p.add_argument('--status', action='store_true', help='print the runs table, write nothing')
    p.add_argument('--fresh-eval', action='store_true', help='measure every test result again')
    a = p.parse_args(argv)
    table = TABLES[a.table] if a.runs is None else replace(TABLES[a.table], runs=a.runs)
    if a.status:
        print('\n'.join(runs_rows(table)) + '\n\nTrained {:,} of {:,} planned samples.'.format(
            *logged_samples(table)))
        return 0
    if not a.no_train and (code := train_all(table, a.data, a.jobs)):
        return code
    command = 'dmn_results ' + ' '.join(sys.argv[1:] if argv is None else argv)
    write_results(table, a.data, evaluate_all(table, a.data, a.fresh_eval), a.out, command)
    print(f'wrote {a.out} ({machine()})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
