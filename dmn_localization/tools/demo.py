"""
``dmn_demo`` (``make demo``): the whole product on a simulated robot, in a few minutes.

1. writes a simulated bag (``dmn_sim_bag``: a Rooms world, its context views, a drive);
2. starts ``dmn_localization_node`` in its own process, on an isolated DDS domain;
3. calls its ``~/build_map`` with the bag's context views and plays the drive to it
   over DDS at bag timing (``dmn_evaluate_bag --live``);
4. prints the metrics and the path of the plot, stops the node, and exits non-zero
   when the node never converged (never reported itself converged while its estimate
   stayed within 0.5 m of the truth for 2 s).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import random
import sys
import time
from typing import List, Optional

from dmn_localization.tools.node_process import NodeProcess
import numpy as np


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_demo``."""
    p = argparse.ArgumentParser(prog='dmn_demo', description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('demo'), help='output directory')
    p.add_argument('--domain', choices=('rooms', 'mazes'), default='rooms')
    p.add_argument('--seed', type=int, default=3, help='world and drive of the simulated bag')
    p.add_argument('--duration', type=float, default=40.0, help='seconds of driving')
    p.add_argument('--contexts', type=int, default=24,
                   help='context views the map is built from (mapping views of the bag)')
    p.add_argument('--model', type=Path, default=None, help='checkpoint (default: shipped)')
    p.add_argument('--particles', type=int, default=2048)
    p.add_argument('--rate', type=float, default=1.0, help='bag seconds per second')
    p.add_argument('--lockstep', action='store_true',
                   help="wait for the node's answer to each frame before playing on: every "
                   'frame is processed, however loaded the machine (slower than the bag)')
    a = p.parse_args(argv)

    from dmn_localization.data.sim_bag import SimBagSpec, write_sim_bag
    from dmn_localization.replay.cli import write_outputs
    from dmn_localization.runtime.default_model import default_model
    from dmn_localization.replay.live import live_replay, LiveReplayError, LiveTarget
    from dmn_localization.replay.metrics import CONVERGENCE_HOLD_S, trajectory_metrics
    from dmn_localization.replay.offline import BagTopics

    model = a.model or default_model()
    if model is None or not Path(model).is_file():
        print(f'dmn_demo: error: no model at {model}', file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f'[1/4] simulated bag: {a.domain}, seed {a.seed}, {a.contexts} context views, '
          f'{a.duration:.0f} s of driving', flush=True)
    summary = write_sim_bag(SimBagSpec(a.domain, a.seed, a.duration, contexts=a.contexts),
                            a.out / 'bag', overwrite=True, progress=False)
    # an isolated DDS domain on loopback: the demo neither hears nor disturbs other robots
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    print(f'[2/4] dmn_localization_node (ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, model '
          f'{model}, {a.particles} particles); log: {a.out / "node.log"}', flush=True)
    # every frame's pose, converged or not: the demo measures the search too
    node = NodeProcess(['-p', f'model_path:={model}', '-p',
                        'publish_pose_when:=always', '-p', f'num_particles:={a.particles}'],
                       a.out / 'node.log')
    try:
        print(f"[3/4] build_map with the bag's context views, then the drive live at "
              f"{a.rate}x{', in lockstep' if a.lockstep else ''}", flush=True)
        target = LiveTarget(rate=a.rate, lockstep=a.lockstep)
        result = live_replay(a.out / 'bag', BagTopics(), target,
                             extent=summary['extent'], snapshot_times=(0.0, 5.0, 20.0))
    except LiveReplayError as exc:
        print(f'dmn_demo: error: {exc} (node log: {a.out / "node.log"})', file=sys.stderr)
        return 1
    finally:
        node.stop()
    metrics = trajectory_metrics(result.stamps, np.array(result.estimates),
                                 result.truth_stamps, np.array(result.truth), result.extent,
                                 result.frame_states())
    plot = write_outputs(a.out, result, metrics, {
        'bag': str(a.out / 'bag'), 'model': str(model), 'mode': 'live',
        'particles': a.particles, 'domain': a.domain, 'seed': a.seed,
        'lockstep': a.lockstep}, 'dmn_demo: '
        f'{a.domain} seed {a.seed}, live over DDS')
    print('[4/4] metrics of the node against ground truth:')
    for key, value in metrics.to_dict().items():
        print(f'  {key:<32} {value}')
    print(f'plot: {plot}\nmetrics: {a.out / "metrics.json"}\n'
          f'({time.monotonic() - started:.0f} s)')
    if metrics.time_to_converge_s is None:
        print('dmn_demo: FAILED: the node never converged (it never reported itself converged '
              f'while its estimate stayed within 0.5 m of the truth for '
              f'{CONVERGENCE_HOLD_S:g} s)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
