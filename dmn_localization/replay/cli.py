"""
``dmn_evaluate_bag``: replay a ROS 2 bag through the localizer and measure it.

    dmn_evaluate_bag BAG [--model PATH] [--out DIR] [--map-from bag|other|run]
    dmn_evaluate_bag BAG --live [--rate 1.0] [--lockstep] [--node /dmn_localization]

Offline (default) the bag runs through the localizer in this process, as fast as it
goes and deterministic for ``--seed``. With ``--live`` it is played over DDS, at bag
timing scaled by ``--rate``, to a running ``dmn_localization_node``: its map comes from
the node's ``~/build_map`` service and its published poses are measured. Writes
``metrics.json``, ``truth.tum`` and ``estimate.tum`` (``evo_ape tum truth.tum
estimate.tum`` works on them) and ``replay.png`` (trajectory against ground truth on the
map with the context poses, error against time, particle snapshots) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Dict, List, Optional

from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint
from dmn_localization.data.dataset import DatasetError
from dmn_localization.replay.live import LiveReplayError, LiveTarget
from dmn_localization.replay.metrics import (errors, status_metrics, StatusMetrics,
                                             trajectory_metrics, TrajectoryMetrics, write_tum)
from dmn_localization.replay.offline import BagTopics, replay, ReplayResult
from dmn_localization.runtime.default_model import default_model
from dmn_localization.runtime.localizer import Localizer, LocalizerSettings
import numpy as np


def plot_replay(result: ReplayResult, path: Path, title: str) -> Path:
    """Plot trajectory vs truth with context poses, error vs time, particle snapshots."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    est = np.array(result.estimates)
    truth = np.array(result.truth)
    err = errors(np.array(result.stamps), est, np.array(result.truth_stamps), truth)
    panels = 2 + len(result.snapshots)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.0))
    x0, y0, x1, y1 = result.extent
    ax = axes[0]
    ax.plot(truth[:, 0], truth[:, 1], 'b-', label='ground truth')
    ax.plot(est[:, 0], est[:, 1], 'r.', markersize=3, label='estimate')
    ax.plot(result.map_poses[:, 0], result.map_poses[:, 1], 'g^', label='context views')
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect('equal')
    ax.set_title('trajectory [m]', fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    t = np.array(result.stamps) - result.stamps[0]
    ax.plot(t, err[:, 0], 'k-')
    ax.axhline(0.5, color='gray', linestyle='--', linewidth=0.8)
    ax.set_xlabel('time [s]')
    ax.set_ylabel('position error [m]')
    ax.set_title('error against time', fontsize=9)
    for ax, (when, frame) in zip(axes[2:], sorted(result.snapshots.items())):
        ax.scatter(frame.particles[:, 0], frame.particles[:, 1], s=2,
                   c=frame.weights, cmap='Reds')
        near = int(np.argmin(np.abs(t - when)))
        ax.plot(*est[near, :2], 'kx')
        truth_at = np.interp(result.stamps[near], result.truth_stamps, truth[:, 0]), np.interp(
            result.stamps[near], result.truth_stamps, truth[:, 1])
        ax.plot(*truth_at, 'bo')
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect('equal')
        ax.set_title(f'particles at t={when:.0f} s', fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(out: Path, result: ReplayResult, metrics: TrajectoryMetrics,
                  info: Dict[str, Any], title: str,
                  status: Optional[StatusMetrics] = None) -> Path:
    """Write ``metrics.json`` (``info`` and the metrics), the TUM files and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / 'metrics.json').write_text(json.dumps(
        {**info, 'metrics': metrics.to_dict(),
         'status': status.to_dict() if status else None}, indent=1) + '\n')
    write_tum(out / 'estimate.tum', result.stamps, np.array(result.estimates))
    write_tum(out / 'truth.tum', result.truth_stamps, np.array(result.truth))
    return plot_replay(result, out / 'replay.png', title)


def run_live(args: argparse.Namespace, topics: BagTopics) -> ReplayResult:
    """Replay to a running node (``--live``); the node's model and particles apply."""
    from dmn_localization.replay.live import live_replay

    if args.model is not None:
        raise ValueError('--model does not apply to --live: the running node uses its own')
    target = LiveTarget(node=args.node, image_topic=args.node_image_topic,
                        odom_topic=args.node_odom_topic, pose_topic=args.node_pose_topic,
                        cloud_topic=args.node_cloud_topic,
                        camera_info_topic=args.node_camera_info_topic, rate=args.rate,
                        connect_timeout=args.connect_timeout, lockstep=args.lockstep)
    return live_replay(args.bag, topics, target,
                       args.map_from, args.map_bag, args.every_metres, args.every_degrees,
                       args.extent, snapshot_times=args.snapshots, progress=not args.quiet)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_evaluate_bag``."""
    topics = BagTopics()
    p = argparse.ArgumentParser(prog='dmn_evaluate_bag', description=__doc__.split('\n\n')[0])
    p.add_argument('bag', type=Path)
    p.add_argument('--model', type=Path, default=None, help='checkpoint (default: shipped)')
    p.add_argument('--out', type=Path, default=Path('replay'))
    p.add_argument('--image-topic', default=topics.image)
    p.add_argument('--odom-topic', default=topics.odom)
    p.add_argument('--truth-topic', default=topics.truth)
    p.add_argument('--mapping-image-topic', default=topics.mapping_image)
    p.add_argument('--mapping-pose-topic', default=topics.mapping_pose)
    p.add_argument('--camera-info-topic', default=topics.camera_info,
                   help="the camera's CameraInfo: images are cropped to the model's view "
                   '(offline; live, the node is given it; ignored when the bag lacks it)')
    p.add_argument('--map-from', choices=('bag', 'other', 'run'), default='bag')
    p.add_argument('--map-bag', type=Path, default=None, help='with --map-from other')
    p.add_argument('--every-metres', type=float, default=None, help='with --map-from run')
    p.add_argument('--every-degrees', type=float, default=None, help='with --map-from run')
    p.add_argument('--extent', type=float, nargs=4, default=None,
                   metavar=('X_MIN', 'Y_MIN', 'X_MAX', 'Y_MAX'),
                   help='map extent in metres (default: the context views with 0.5 m around)')
    p.add_argument('--particles', type=int, default=2048)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--likelihood-scale', type=float,
                   default=LocalizerSettings.likelihood_scale, metavar='F',
                   help="factor on the model's log-likelihoods in every update (the node's "
                   'likelihood_scale; offline replay only)')
    p.add_argument('--snapshots', type=float, nargs='*', default=[0.0, 5.0, 20.0],
                   help='seconds after the first frame to plot the particles')
    p.add_argument('--quiet', action='store_true')
    live = p.add_argument_group('live replay to a running node')
    live.add_argument('--live', action='store_true',
                      help='play the bag over DDS to a running dmn_localization_node')
    live.add_argument('--rate', type=float, default=1.0, help='bag seconds per second')
    live.add_argument('--lockstep', action='store_true',
                      help="wait for the node's answer to each frame before playing on "
                      '(every frame processed; accuracy apart from keeping up)')
    live.add_argument('--node', default=LiveTarget.node,
                      help='fully qualified name of the node (its ~/build_map is called)')
    live.add_argument('--connect-timeout', type=float, default=LiveTarget.connect_timeout,
                      help='seconds to wait for the node')
    for kind, what in (('image', 'camera frames'), ('odom', 'odometry'),
                       ('camera-info', "camera's CameraInfo"),
                       ('pose', 'poses the node publishes'),
                       ('cloud', 'particle clouds the node publishes')):
        live.add_argument(f'--node-{kind}-topic', default=None,
                          help=f'topic of the {what} (default: read from the running node, '
                          'its namespace and remappings applied)')
    a = p.parse_args(argv)
    names = BagTopics(a.image_topic, a.odom_topic, a.truth_topic, a.mapping_image_topic,
                      a.mapping_pose_topic, a.camera_info_topic)
    try:
        if a.live:
            model, title = None, f'{a.bag.name}: {a.node} (live)'
            result = run_live(a, names)
        else:
            model = a.model or default_model()
            if model is None:
                raise CheckpointError('no --model given and no shipped default model')
            loaded = load_checkpoint(model)
            title = f'{a.bag.name}: {loaded.name}'
            if not 0 < a.likelihood_scale <= 10:
                raise ValueError(f'--likelihood-scale must be in (0, 10], got '
                                 f'{a.likelihood_scale}')
            localizer = Localizer(loaded, 'cpu', LocalizerSettings(
                num_particles=a.particles, seed=a.seed, likelihood_scale=a.likelihood_scale))
            result = replay(a.bag, localizer, names, a.map_from, a.map_bag, a.every_metres,
                            a.every_degrees, a.extent, snapshot_times=a.snapshots,
                            progress=not a.quiet)
        metrics = trajectory_metrics(result.stamps, np.array(result.estimates),
                                     result.truth_stamps, np.array(result.truth),
                                     result.extent, result.frame_states())
        status = status_metrics(result.stamps, np.array(result.estimates), result.states,
                                result.truth_stamps, np.array(result.truth)) if (
                                    result.states) else None
    except (CheckpointError, DatasetError, FileNotFoundError, LiveReplayError,
            ValueError) as exc:
        print(f'dmn_evaluate_bag: error: {exc}', file=sys.stderr)
        return 2
    plot = write_outputs(a.out, result, metrics, {
        'bag': str(a.bag), 'model': str(model) if model else None,
        'node': a.node if a.live else None, 'mode': 'live' if a.live else 'offline',
        'seed': None if a.live else a.seed, 'particles': None if a.live else a.particles,
        'likelihood_scale': None if a.live else a.likelihood_scale,
        'map_from': a.map_from, 'lockstep': a.lockstep if a.live else None,
        'camera': result.camera}, title, status)
    for key, value in {**metrics.to_dict(), **(status.to_dict() if status else {})}.items():
        print(f'  {key:<32} {value}')
    print(f'plot: {plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
