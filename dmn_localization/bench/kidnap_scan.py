"""
Find simulated runs on which a model shows the whole kidnap story, for the DDS kidnap test.

    python -m dmn_localization.bench.kidnap_scan --model models/dmn-pf-rooms.pt \
        [--domain rooms] [--seeds 0 14] [--filter-seeds 4] [--duration 40] [--kidnap-at 20]

``test/test_kidnap.py`` replays one run to the node over DDS and needs the node to have
converged before the kidnap and to go ``lost``, ``global`` and ``converged`` again after
it (:func:`tells_the_kidnap_story`). Which run does that depends on the model, so a new
model needs a new run: this replays every bag seed offline with the node's defaults under
several filter seeds (DDS timing perturbs the filter's draws like another seed does) and
prints, per bag seed, the story under each filter seed; a seed passes when every filter
seed tells it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import sys
import tempfile
from typing import Iterable, List, Optional, Sequence, Tuple

#: (stamp, state) whenever the state changes, as the live replay records them
StateChanges = Sequence[Tuple[float, str]]


def in_order(states: Iterable[str], wanted: Sequence[str]) -> bool:
    """Return True when ``wanted`` occurs in ``states`` as a subsequence."""
    it = iter(states)
    return all(any(s == w for s in it) for w in wanted)


def tells_the_kidnap_story(changes: StateChanges, kidnap_s: float) -> bool:
    """Converged before the kidnap; lost, global and converged again (in this order) after."""
    before = [s for t, s in changes if t < kidnap_s]
    after = [s for t, s in changes if t >= kidnap_s]
    return 'converged' in before and in_order(after, ['lost', 'global', 'converged'])


def main(argv: Optional[List[str]] = None) -> int:
    """Scan bag seeds; print the story of each and the seeds that pass."""
    from dmn_localization.bench.kidnap_bench import write_bag
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.runtime.localizer import Localizer, LocalizerSettings
    from dmn_localization.replay.live import state_changes
    from dmn_localization.replay.metrics import kidnap_stamps
    from dmn_localization.replay.offline import BagTopics, replay
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', type=Path, required=True)
    p.add_argument('--domain', default='rooms', choices=('rooms', 'mazes'))
    p.add_argument('--seeds', type=int, nargs=2, default=(0, 14), metavar=('FIRST', 'END'),
                   help='bag seeds FIRST..END-1')
    p.add_argument('--filter-seeds', type=int, default=4)
    p.add_argument('--duration', type=float, default=40.0)
    p.add_argument('--kidnap-at', type=float, default=20.0)
    a = p.parse_args(argv)
    loaded = load_checkpoint(a.model)
    passing = []
    with tempfile.TemporaryDirectory(prefix='kidnap-scan-') as tmp:
        for seed in range(*a.seeds):
            bag = Path(tmp) / f'{a.domain}_{seed}'
            if not write_bag(bag, a.domain, seed, a.duration, a.kidnap_at):
                return 2
            told = []
            for filter_seed in range(a.filter_seeds):
                settings = replace(LocalizerSettings(), seed=filter_seed)
                result = replay(bag, Localizer(loaded, 'cpu', settings), BagTopics(),
                                progress=False)
                kidnap = float(kidnap_stamps(result.truth_stamps, np.array(result.truth))[0])
                changes = state_changes(list(zip(result.stamps, result.states)))
                told.append(tells_the_kidnap_story(changes, kidnap))
                story = ', '.join(f'{s} {t - result.stamps[0]:.1f} s' for t, s in changes)
                print(f'seed {seed} filter seed {filter_seed}: '
                      f'{"tells" if told[-1] else "does not tell"} the story '
                      f'(kidnap {kidnap - result.stamps[0]:.1f} s): {story}', flush=True)
            if all(told):
                passing.append(seed)
    print(f'bag seeds on which every filter seed tells the story: {passing}')
    return 0 if passing else 1


if __name__ == '__main__':
    sys.exit(main())
