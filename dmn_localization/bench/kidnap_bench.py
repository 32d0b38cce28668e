"""
Kidnap benchmark: how fast the localizer recovers and how honest its status is.

    python -m dmn_localization.bench.kidnap_bench --seeds 10 [--first-seed 0]
        [--domains rooms mazes] [--results RESULTS.md] [--out runs/bench/kidnap.json]

For every domain with a shipped model and every seed, ``dmn_sim_bag`` writes a run in
which the robot is carried elsewhere half way (``--kidnap-at``); the run is replayed
offline (the node's runtime, its default parameters) once per recovery setting: off,
and each candidate pair of ``recovery_alpha_slow``/``recovery_alpha_fast``. Reported per
setting, over the seeds: kidnaps recovered within the run and the median time to
recover (estimate within 0.5 m for 1 s), the share of frames reported converged while
over 1 m off (goal under 3 %), the share of frames over 1 m off reported lost or global
(goal over 90 %), and the median time of the first convergence after the global start.
With ``--results`` the table goes into its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import os
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: (recovery_alpha_slow, recovery_alpha_fast); (0, 0) is recovery off
CANDIDATES: Tuple[Tuple[float, float], ...] = (
    (0.0, 0.0), (0.001, 0.1), (0.01, 0.1), (0.005, 0.3), (0.01, 0.3), (0.05, 0.5))
MODELS = {'rooms': 'dmn-pf-rooms.pt', 'mazes': 'dmn-pf-mazes.pt'}


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def write_bag(out: Path, domain: str, seed: int, duration: float, kidnap_at: float,
              contexts: Optional[int] = None) -> bool:
    """
    Write the simulated kidnapped run of ``seed`` to ``out`` with ``dmn_sim_bag``.

    ``contexts``: survey views of its map (None: the tool's default for ``domain``).
    Returns False when the tool failed (it says why).
    """
    from dmn_localization.data import sim_bag

    argv = ['--domain', domain, '--seed', str(seed), '--duration', str(duration),
            '--kidnap-at', str(kidnap_at), '--out', str(out)]
    if contexts is not None:
        argv += ['--contexts', str(contexts)]
    return sim_bag.main(argv) == 0


def run_one(bag: Path, loaded: Any, rates: Tuple[float, float], seed: int,
            overrides: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """
    Replay ``bag`` with recovery ``rates``; return its trajectory and status metrics.

    ``overrides``: node parameter values other than their defaults.
    """
    from dmn_localization.runtime.localizer import Localizer
    from dmn_localization.replay.metrics import status_metrics, trajectory_metrics
    from dmn_localization.replay.offline import BagTopics, replay

    localizer = Localizer(loaded, 'cpu', localizer_settings(seed, rates, overrides))
    result = replay(bag, localizer, BagTopics(), progress=False)
    estimates = np.array(result.estimates)
    status = status_metrics(result.stamps, estimates, result.states, result.truth_stamps,
                            np.array(result.truth))
    # the first convergence is measured on the part before the kidnap
    before = [i for i, t in enumerate(result.stamps)
              if not status.kidnaps_s or t - result.stamps[0] < status.kidnaps_s[0]]
    first = trajectory_metrics([result.stamps[i] for i in before], estimates[before],
                               result.truth_stamps, np.array(result.truth), result.extent,
                               [result.states[i] for i in before])
    whole = trajectory_metrics(result.stamps, estimates, result.truth_stamps,
                               np.array(result.truth), result.extent, result.states)
    return {'status': status.to_dict(), 'first_convergence_s': first.time_to_converge_s,
            'within_0_5_m': whole.share_within_0_5_m}


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Aggregate the runs of one domain and recovery setting."""
    times = [t for r in runs for t in r['status']['time_to_recover_s']]
    wrong = sum(r['status']['wrong_frames'] for r in runs)
    frames = sum(r['status']['frames'] for r in runs)
    flagged = sum((r['status']['wrong_flagged_share'] or 0.0) * r['status']['wrong_frames']
                  for r in runs)
    right = sum(r['status'].get('right_frames', 0) for r in runs)
    alarms = sum((r['status'].get('false_alarm_share') or 0.0)
                 * r['status'].get('right_frames', 0) for r in runs)
    return {
        'kidnaps': len(times),
        'recovered': sum(t is not None for t in times),
        'median_time_to_recover_s': _median(times),
        'false_confidence_share': sum(r['status']['false_confidence_share']
                                      * r['status']['frames'] for r in runs) / max(frames, 1),
        # the part of it within 2 s of a kidnap: the time to notice
        'false_confidence_at_kidnap_share': sum(
            r['status'].get('false_confidence_at_kidnap_share', 0.0) * r['status']['frames']
            for r in runs) / max(frames, 1),
        # pooled over the frames more than 1 m off of every run
        'wrong_flagged_share': flagged / wrong if wrong else None,
        # pooled over the frames within 0.5 m of every run
        'false_alarm_share': alarms / right if right else None,
        'median_first_convergence_s': _median([r['first_convergence_s'] for r in runs]),
        'first_converged': sum(r['first_convergence_s'] is not None for r in runs),
        'within_0_5_m': float(np.mean([r['within_0_5_m'] for r in runs])),
    }


def _pct(value: Optional[float]) -> str:
    return '–' if value is None else f'{value:.1%}'


def _seconds(value: Optional[float]) -> str:
    return '–' if value is None else f'{value:.1f} s'


def markdown(report: Dict[str, Any], command: str) -> str:
    """Return the RESULTS.md section of a report."""
    lines = ['## Kidnap recovery and status honesty', '',
             f'Made by `{command}` on {report["machine"]} ({report["wall_time_s"] / 60:.0f} '
             'min). Each run: a simulated bag of '
             f'{report["duration_s"]:g} s (`dmn_sim_bag --domain D --seed S --duration '
             f'{report["duration_s"]:g} --kidnap-at {report["kidnap_at_s"]:g}'
             + (f' --contexts {report["contexts"]}' if report.get('contexts') else '')
             + '`), replayed '
             "offline with the node's default parameters but for the recovery rates"
             + ''.join(f' and {k} {v:g}' for k, v in report.get('settings', {}).items())
             + '; '
             f'seeds {report["seeds"][0]}..{report["seeds"][-1]}. Recovered: the estimate '
             'stays within 0.5 m for 1 s after the kidnap, within the run. False confidence: '
             'share of all frames reported `converged` while more than 1 m off (goal under '
             '3 %); in parentheses the part within 2 s after the kidnap (the time to notice '
             'it), the rest is a belief sure of a wrong place. Flagged: of the frames more '
             'than 1 m off, the share reported `lost` or `global` (goal over 90 %). False '
             'alarms: of the frames within 0.5 m, the share reported `lost` or `global`. '
             'Within 0.5 m: share of all frames, the mean over the runs.', '',
             '| domain | alpha slow, fast | recovered | median time to recover | false '
             'confidence | flagged | false alarms | first convergence (median) | within '
             '0.5 m |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for domain, rows in report['domains'].items():
        for key, row in rows.items():
            lines.append(
                f'| {domain} | {key} | {row["recovered"]}/{row["kidnaps"]} | '
                f'{_seconds(row["median_time_to_recover_s"])} | '
                f'{_pct(row["false_confidence_share"])} '
                f'({_pct(row.get("false_confidence_at_kidnap_share"))}) | '
                f'{_pct(row["wrong_flagged_share"])} | '
                f'{_pct(row.get("false_alarm_share"))} | '
                f'{row["first_converged"]}/{len(report["seeds"])}, '
                f'{_seconds(row["median_first_convergence_s"])} | '
                f'{_pct(row["within_0_5_m"])} |')
    if report.get('missing_models'):
        lines += ['', 'Not measured (no shipped model): ' + ', '.join(report['missing_models'])
                  + '.']
    return '\n'.join(lines)


def setting_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """
    Turn ``['likelihood_scale=0.125']`` into node parameter values (typed by the parameter).

    ValueError for a name that is not one of the node's numeric parameters, or a recovery
    rate (each row of the table sets those).
    """
    from dmn_localization.ros.parameters import BY_NAME

    out: Dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition('=')
        spec = BY_NAME.get(name)
        if not sep or spec is None or type(spec.default) not in (int, float) or \
                name.startswith('recovery_alpha'):
            raise ValueError(f'--set {item}: expected FIELD=VALUE with a numeric parameter of '
                             'the node other than the recovery rates')
        out[name] = type(spec.default)(value)
    return out


def localizer_settings(seed: int, rates: Tuple[float, float],
                       overrides: Optional[Dict[str, Any]] = None) -> Any:
    """Return the node's settings from its defaults with ``rates``, ``overrides``, ``seed``."""
    from dmn_localization.ros import parameters

    values = {spec.name: spec.default for spec in parameters.PARAMETERS}
    values.update(overrides or {}, recovery_alpha_slow=rates[0], recovery_alpha_fast=rates[1])
    return replace(parameters.localizer_settings(values), seed=seed)


def main(argv: Optional[List[str]] = None) -> int:
    """Write the bags, replay them with every recovery setting, print and save the table."""
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.runtime.default_model import SOURCE_MODELS

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--domains', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--seeds', type=int, default=10, help='how many runs (bag and filter seeds)')
    p.add_argument('--first-seed', type=int, default=0,
                   help='seed of the first run: settings chosen on one range of seeds are '
                   'reported on another')
    p.add_argument('--duration', type=float, default=60.0)
    p.add_argument('--kidnap-at', type=float, default=30.0)
    p.add_argument('--contexts', type=int, default=None,
                   help="survey views the map is built from (dmn_sim_bag's default per "
                   'domain when not given)')
    p.add_argument('--models', type=Path, default=SOURCE_MODELS)
    p.add_argument('--out', type=Path, default=Path('runs/bench/kidnap.json'))
    p.add_argument('--results', type=Path, default=None,
                   help='write the table into this RESULTS.md (its kidnap section)')
    p.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                   help="another value of one of the node's parameters (repeatable), e.g. "
                   'likelihood_scale=0.125 or converged_xy_std=0.3')
    p.add_argument('--candidates', type=int, nargs='+', default=None, metavar='I',
                   help='replay only these rows of the recovery settings (0: off)')
    a = p.parse_args(argv)
    try:
        overrides = setting_overrides(a.set)
        localizer_settings(0, CANDIDATES[0], overrides)  # out of range: refused here
    except ValueError as exc:
        p.error(str(exc))
    candidates = CANDIDATES if a.candidates is None else tuple(CANDIDATES[i]
                                                               for i in a.candidates)
    started = time.monotonic()
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    report: Dict[str, Any] = {'seeds': seeds, 'duration_s': a.duration,
                              'kidnap_at_s': a.kidnap_at, 'contexts': a.contexts,
                              'domains': {}, 'missing_models': [],
                              'machine': f'{platform.machine()}, {os.cpu_count()} cores',
                              'candidates': [list(c) for c in candidates],
                              'settings': overrides}
    with tempfile.TemporaryDirectory(prefix='kidnap-bench-') as tmp:
        for domain in a.domains:
            model = a.models / MODELS[domain]
            if not model.is_file():
                print(f'{domain}: no {model}, skipped', file=sys.stderr)
                report['missing_models'].append(domain)
                continue
            loaded = load_checkpoint(model)
            runs: Dict[str, List[Dict[str, Any]]] = {}
            for seed in seeds:
                bag = Path(tmp) / f'{domain}_{seed}'
                if not write_bag(bag, domain, seed, a.duration, a.kidnap_at, a.contexts):
                    return 2
                for rates in candidates:
                    key = 'off' if rates == (0.0, 0.0) else f'{rates[0]:g}, {rates[1]:g}'
                    runs.setdefault(key, []).append(run_one(bag, loaded, rates, seed,
                                                            overrides))
                    row = runs[key][-1]['status']
                    print(f'{domain} seed {seed} recovery {key}: recovered after '
                          f'{row["time_to_recover_s"]}, false confidence '
                          f'{row["false_confidence_share"]:.1%}', flush=True)
            report['domains'][domain] = {k: summarize(v) for k, v in runs.items()}
            report.setdefault('runs', {})[domain] = runs
    report['wall_time_s'] = time.monotonic() - started
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + '\n')
    command = 'python -m dmn_localization.bench.kidnap_bench ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    text = markdown(report, command.strip())
    print(text)
    if a.results is not None:
        from dmn_localization.learning.results_md import write_section

        write_section(a.results, 'kidnap', text)
        print(f'wrote the kidnap section of {a.results}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
