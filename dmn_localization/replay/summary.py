"""
One table of several replays: ``python -m dmn_localization.replay.summary DIR [DIR ...]``.

Each ``DIR`` is a ``dmn_evaluate_bag --out`` directory; the table gives, per replay and
as the mean of those sharing a label (the directory name before its last ``-``), the
share of frames within 0.5 m of the truth, the ATE, and the share of frames reported
converged while more than 1 m off (false confidence).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Dict, List, Optional, Sequence

COLUMNS = (('within 0.5 m', 'metrics', 'share_within_0_5_m', 100.0, '{:.1f} %'),
           ('ATE', 'metrics', 'ate_rmse_m', 1.0, '{:.2f} m'),
           ('false confidence', 'status', 'false_confidence_share', 100.0, '{:.1f} %'))


class SummaryError(RuntimeError):
    """A directory that holds no replay's metrics."""


def read_replay(directory: Path) -> Dict[str, float]:
    """Return the summary figures of one ``dmn_evaluate_bag`` output directory."""
    path = Path(directory) / 'metrics.json'
    if not path.is_file():
        raise SummaryError(f'{directory}: no metrics.json (dmn_evaluate_bag --out {directory})')
    record = json.loads(path.read_text())
    return {name: record[part][key] * scale for name, part, key, scale, _ in COLUMNS}


def summary_table(directories: Sequence[Path]) -> str:
    """Return a markdown table: one row per replay, then one mean row per label."""
    rows: List[str] = ['| replay | ' + ' | '.join(c[0] for c in COLUMNS) + ' |',
                       '|---|' + '---|' * len(COLUMNS)]
    groups: Dict[str, List[Dict[str, float]]] = {}
    for directory in directories:
        figures = read_replay(directory)
        groups.setdefault(Path(directory).name.rpartition('-')[0] or Path(directory).name,
                          []).append(figures)
        rows.append(f'| {Path(directory).name} | ' + ' | '.join(
            fmt.format(figures[name]) for name, *_, fmt in COLUMNS) + ' |')
    for label, members in groups.items():
        rows.append(f'| **{label}, mean of {len(members)}** | ' + ' | '.join(
            fmt.format(sum(m[name] for m in members) / len(members))
            for name, *_, fmt in COLUMNS) + ' |')
    return '\n'.join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('replays', nargs='+', type=Path, help='dmn_evaluate_bag --out directories')
    args = parser.parse_args(argv)
    try:
        print(summary_table(args.replays))
    except SummaryError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
