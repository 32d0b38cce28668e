"""
``dmn_sim_bag``: write a ROS 2 bag of a simulated robot run that a robot stack can replay.

Topics (all stamps increase; the mapping part comes first):

=====================  ==========================  =========================================
topic                  type                        content
=====================  ==========================  =========================================
/mapping/image         sensor_msgs/Image           context views (rgb8), frame ``camera``
/mapping/pose          geometry_msgs/PoseStamped   their poses in ``map``, same stamps
/camera/image_raw      sensor_msgs/Image           the run's camera (rgb8, 128x128 default)
/odom                  nav_msgs/Odometry           ``odom`` -> ``base_link``, noisy, drifting,
                                                   with covariance; 4x the camera rate
/ground_truth/pose     geometry_msgs/PoseStamped   true pose of ``base_link`` in ``map``
/tf                    tf2_msgs/TFMessage          ``odom`` -> ``base_link`` (from /odom)
/tf_static             tf2_msgs/TFMessage          ``base_link`` -> ``camera`` (identity)
=====================  ==========================  =========================================

The camera frame ``camera`` coincides with ``base_link`` (x forward, y left, z up; not
an optical frame). The bag is written with ``rosbags`` (MCAP by default, sqlite3 on
request), the formats ``ros2 bag play`` reads. This is the one module of ``data/``
that knows ROS message types.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import math
from pathlib import Path
import shutil
import sys
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from dmn_localization.core.camera import CameraSpec, Intrinsics, SIM_CAMERA
from dmn_localization.core.geometry import compose_motions
from dmn_localization.data.trajectories import drive, DriveSettings, noisy_odometry, OdometryNoise
from dmn_localization.data.worlds import DOMAINS, generate_world
import numpy as np

TOPICS = {
    'mapping_image': '/mapping/image', 'mapping_pose': '/mapping/pose',
    'image': '/camera/image_raw', 'odom': '/odom', 'ground_truth': '/ground_truth/pose',
    'tf': '/tf', 'tf_static': '/tf_static', 'camera_info': '/camera/camera_info',
}
FRAMES = {'map': 'map', 'odom': 'odom', 'base': 'base_link', 'camera': 'camera'}
#: Stamp of the first message: a fixed time, so the same arguments give the same bag.
START_NS = 1_700_000_000 * 10**9
DEFAULT_CONTEXTS = {'rooms': 8, 'mazes': 48}
#: A kidnapped robot lands at least this far from where it was picked up.
KIDNAP_MIN_DISTANCE_M = 2.0


@dataclass
class SimBagSpec:
    """What a simulated bag holds."""

    domain: str = 'rooms'
    seed: int = 0
    duration: float = 30.0
    camera_rate: float = 5.0
    odom_per_frame: int = 4
    camera_size: tuple = (128, 128)
    contexts: Optional[int] = None
    noise: OdometryNoise = field(default_factory=OdometryNoise)
    storage: str = 'mcap'
    #: seconds into the run at which the robot is carried elsewhere (ground truth jumps at
    #: least :data:`KIDNAP_MIN_DISTANCE_M`; odometry does not move)
    kidnap_at: Sequence[float] = ()
    #: height (m), pitch and vertical field of view (degrees) of the robot's camera, for
    #: the mapping views and the run; the horizontal field of view follows from the
    #: image's aspect. None: the simulator's camera of the datasets.
    camera_height: Optional[float] = None
    camera_pitch: Optional[float] = None
    camera_fov_y: Optional[float] = None

    def camera(self) -> CameraSpec:
        """Return the camera of the bag's images."""
        height, width = self.camera_size
        return CameraSpec.of_image(
            width, height, SIM_CAMERA.fov_y_deg if self.camera_fov_y is None
            else self.camera_fov_y,
            SIM_CAMERA.height_m if self.camera_height is None else self.camera_height,
            SIM_CAMERA.pitch_deg if self.camera_pitch is None else self.camera_pitch)

    def num_contexts(self) -> int:
        """Return the number of mapping views (a per-domain default when unset)."""
        return self.contexts if self.contexts is not None else DEFAULT_CONTEXTS[self.domain]


def _quaternion(yaw: float) -> Dict[str, float]:
    return {'x': 0.0, 'y': 0.0, 'z': math.sin(yaw / 2), 'w': math.cos(yaw / 2)}


class _Messages:
    """Build rosbags messages of the Jazzy type store."""

    def __init__(self) -> None:
        from rosbags.typesys import get_typestore, Stores

        self.store = get_typestore(Stores.ROS2_JAZZY)
        self.t = self.store.types

    def stamp(self, ns: int) -> Any:
        return self.t['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9)

    def header(self, ns: int, frame: str) -> Any:
        return self.t['std_msgs/msg/Header'](stamp=self.stamp(ns), frame_id=frame)

    def pose(self, x: float, y: float, yaw: float) -> Any:
        point = self.t['geometry_msgs/msg/Point'](x=float(x), y=float(y), z=0.0)
        quat = self.t['geometry_msgs/msg/Quaternion'](**_quaternion(float(yaw)))
        return self.t['geometry_msgs/msg/Pose'](position=point, orientation=quat)

    def pose_stamped(self, ns: int, frame: str, pose: Sequence[float]) -> Any:
        return self.t['geometry_msgs/msg/PoseStamped'](header=self.header(ns, frame),
                                                       pose=self.pose(*pose))

    def image(self, ns: int, frame: str, pixels: np.ndarray) -> Any:
        from dmn_localization.messages.image_conversion import array_to_imgmsg

        fields = array_to_imgmsg(pixels, 'rgb8', image_factory=SimpleNamespace)
        return self.t['sensor_msgs/msg/Image'](
            header=self.header(ns, frame), height=fields.height, width=fields.width,
            encoding=fields.encoding, is_bigendian=fields.is_bigendian, step=fields.step,
            data=np.frombuffer(fields.data, dtype=np.uint8))

    def odometry(self, ns: int, pose: Sequence[float], twist: Sequence[float],
                 std: Sequence[float]) -> Any:
        cov = np.zeros(36)
        variances = [std[0] ** 2, std[1] ** 2, 1e-9, 1e-9, 1e-9, std[2] ** 2]
        cov[[0, 7, 14, 21, 28, 35]] = np.maximum(variances, 1e-9)
        vec = self.t['geometry_msgs/msg/Vector3']
        twist_msg = self.t['geometry_msgs/msg/Twist'](
            linear=vec(x=float(twist[0]), y=float(twist[1]), z=0.0),
            angular=vec(x=0.0, y=0.0, z=float(twist[2])))
        return self.t['nav_msgs/msg/Odometry'](
            header=self.header(ns, FRAMES['odom']), child_frame_id=FRAMES['base'],
            pose=self.t['geometry_msgs/msg/PoseWithCovariance'](
                pose=self.pose(*pose), covariance=cov),
            twist=self.t['geometry_msgs/msg/TwistWithCovariance'](
                twist=twist_msg, covariance=cov.copy()))

    def camera_info(self, size: Sequence[int], camera: CameraSpec) -> Any:
        """Return a ``sensor_msgs/CameraInfo`` of a centred pinhole camera (header unset)."""
        height, width = int(size[0]), int(size[1])
        c = Intrinsics.from_fov(width, height, camera.fov_x_deg, camera.fov_y_deg)
        k = np.array([c.fx, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0])
        p = np.array([c.fx, 0.0, c.cx, 0.0, 0.0, c.fy, c.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        roi = self.t['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t['sensor_msgs/msg/CameraInfo'](
            header=self.header(0, FRAMES['camera']), height=height, width=width,
            distortion_model='plumb_bob', d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=p,
            binning_x=0, binning_y=0, roi=roi)

    def tf(self, ns: int, parent: str, child: str, pose: Sequence[float]) -> Any:
        q = _quaternion(float(pose[2]))
        transform = self.t['geometry_msgs/msg/Transform'](
            translation=self.t['geometry_msgs/msg/Vector3'](x=float(pose[0]), y=float(pose[1]),
                                                            z=0.0),
            rotation=self.t['geometry_msgs/msg/Quaternion'](**q))
        stamped = self.t['geometry_msgs/msg/TransformStamped'](
            header=self.header(ns, parent), child_frame_id=child, transform=transform)
        return self.t['tf2_msgs/msg/TFMessage'](transforms=[stamped])


def _drive_with_kidnaps(world: Any, steps: int, dt: float, spec: SimBagSpec,
                        rng: np.random.Generator) -> tuple:
    """
    Return true poses ``(T, 3)``, noisy odometry motions ``(T, 3)`` and kidnap step indices.

    At each kidnap the truth jumps to a free pose at least :data:`KIDNAP_MIN_DISTANCE_M`
    away and driving goes on from there; the odometry motion of that step is zero.
    """
    cuts = sorted({int(round(t / dt)) for t in spec.kidnap_at})
    if any(c <= 0 or c >= steps for c in cuts):
        raise ValueError(f'--kidnap-at must lie inside the run (0, {spec.duration:g}) s, '
                         f'got {list(spec.kidnap_at)}')
    bounds = [0, *cuts, steps]
    truths, motions = [], []
    start = None
    for first, end in zip(bounds[:-1], bounds[1:]):
        if truths:
            here = truths[-1][-1, :2]
            for _ in range(1000):
                start = world.sample_free_poses(1, rng)[0]
                if np.hypot(*(start[:2] - here)) >= KIDNAP_MIN_DISTANCE_M:
                    break
            else:
                raise ValueError(f'no free pose {KIDNAP_MIN_DISTANCE_M} m from {here} to '
                                 'kidnap the robot to')
        part = drive(world, end - first, rng, DriveSettings(dt=dt), start=start)
        truths.append(part)
        motions.append(noisy_odometry(part, spec.noise, rng))  # [0] = 0: odometry stands
    return np.concatenate(truths), np.concatenate(motions), cuts


def write_sim_bag(spec: SimBagSpec, out: Path, overwrite: bool = False,
                  progress: bool = True) -> Dict[str, Any]:
    """Render the run of ``spec`` and write it as a bag at ``out``; return a summary."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dmn_localization.data.render import WorldRenderer

    if spec.domain not in DOMAINS:
        raise ValueError(f'domain must be one of {", ".join(DOMAINS)}')
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f'{out} exists (use --overwrite to replace it)')
        shutil.rmtree(out)
    world = generate_world(spec.domain, spec.seed)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 7]))
    dt_odom = 1.0 / (spec.camera_rate * spec.odom_per_frame)
    steps = int(round(spec.duration * spec.camera_rate)) * spec.odom_per_frame
    truth, odom_motion, cuts = _drive_with_kidnaps(world, steps, dt_odom, spec, rng)
    odom_pose = compose_motions(np.zeros(3), odom_motion)  # odom frame: the start pose
    odom_std = spec.noise.std(odom_motion)
    contexts = world.sample_free_poses(spec.num_contexts(), rng)
    camera = spec.camera()
    renderer = WorldRenderer(spec.camera_size, world, camera)
    frames = np.arange(0, steps, spec.odom_per_frame)
    msgs = _Messages()
    info = msgs.camera_info(spec.camera_size, camera)
    storage = StoragePlugin.MCAP if spec.storage == 'mcap' else StoragePlugin.SQLITE3
    counts: Dict[str, int] = dict.fromkeys(TOPICS, 0)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(contexts) + len(frames), unit='img', desc=f'{out.name}')
    with Writer(out, version=9, storage_plugin=storage) as writer:
        conns = {
            key: writer.add_connection(topic, typ, typestore=msgs.store)
            for key, topic, typ in [
                ('mapping_image', TOPICS['mapping_image'], 'sensor_msgs/msg/Image'),
                ('mapping_pose', TOPICS['mapping_pose'], 'geometry_msgs/msg/PoseStamped'),
                ('image', TOPICS['image'], 'sensor_msgs/msg/Image'),
                ('odom', TOPICS['odom'], 'nav_msgs/msg/Odometry'),
                ('ground_truth', TOPICS['ground_truth'], 'geometry_msgs/msg/PoseStamped'),
                ('tf', TOPICS['tf'], 'tf2_msgs/msg/TFMessage'),
                ('tf_static', TOPICS['tf_static'], 'tf2_msgs/msg/TFMessage'),
                ('camera_info', TOPICS['camera_info'], 'sensor_msgs/msg/CameraInfo')]}

        def put(key: str, ns: int, message: Any) -> None:
            writer.write(conns[key], ns, msgs.store.serialize_cdr(message, message.__msgtype__))
            counts[key] += 1

        put('tf_static', START_NS, msgs.tf(START_NS, FRAMES['base'], FRAMES['camera'],
                                           (0.0, 0.0, 0.0)))
        for i, pose in enumerate(contexts):
            ns = START_NS + (i + 1) * 10_000_000
            put('mapping_image', ns, msgs.image(ns, FRAMES['camera'], renderer.render(pose)[0]))
            put('mapping_pose', ns, msgs.pose_stamped(ns, FRAMES['map'], pose))
            if bar is not None:
                bar.update()
        run_start = START_NS + (len(contexts) + 1) * 10_000_000 + 10**9
        for k in range(steps):
            ns = run_start + int(round(k * dt_odom * 1e9))
            twist = odom_motion[k + 1] / dt_odom if k + 1 < steps else np.zeros(3)
            put('odom', ns, msgs.odometry(ns, odom_pose[k], twist, odom_std[k]))
            put('tf', ns, msgs.tf(ns, FRAMES['odom'], FRAMES['base'], odom_pose[k]))
            put('ground_truth', ns, msgs.pose_stamped(ns, FRAMES['map'], truth[k]))
            if k % spec.odom_per_frame == 0:
                put('image', ns, msgs.image(ns, FRAMES['camera'], renderer.render(truth[k])[0]))
                info.header = msgs.header(ns, FRAMES['camera'])
                put('camera_info', ns, info)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    renderer.close()
    step_lengths = np.hypot(*np.diff(truth[:, :2], axis=0).T)
    step_lengths[[c - 1 for c in cuts]] = 0.0  # being carried is not driving
    return {'path': str(out), 'domain': spec.domain, 'seed': spec.seed,
            'kidnaps': [{'at_s': float(c * dt_odom), 'from': truth[c - 1].tolist(),
                         'to': truth[c].tolist()} for c in cuts],
            'extent': list(world.extent), 'counts': {TOPICS[k]: v for k, v in counts.items()},
            'duration_s': spec.duration, 'distance_m': float(step_lengths.sum())}


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_sim_bag``."""
    parser = argparse.ArgumentParser(
        prog='dmn_sim_bag', description='Write a ROS 2 bag of a simulated robot run.')
    parser.add_argument('--domain', choices=DOMAINS, default='rooms')
    parser.add_argument('--seed', type=int, default=0, help='world and run seed')
    parser.add_argument('--duration', type=float, default=30.0, help='seconds of driving')
    parser.add_argument('--rate', type=float, default=5.0, help='camera rate, Hz')
    parser.add_argument('--camera-size', type=int, nargs=2, default=(128, 128),
                        metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--contexts', type=int, default=None,
                        help='mapping views (default: rooms 8, mazes 48)')
    parser.add_argument('--odom-noise', type=float, default=1.0,
                        help='scale of the default odometry noise (0: perfect odometry)')
    parser.add_argument('--kidnap-at', type=float, nargs='+', default=(), metavar='SECONDS',
                        help='carry the robot elsewhere at these seconds of the run (ground '
                        f'truth jumps at least {KIDNAP_MIN_DISTANCE_M:g} m, odometry does not)')
    parser.add_argument('--camera-height', type=float, default=None,
                        help=f'camera height, m (default {SIM_CAMERA.height_m:g})')
    parser.add_argument('--camera-pitch', type=float, default=None,
                        help=f'camera pitch, degrees, down < 0 (default '
                        f'{SIM_CAMERA.pitch_deg:g})')
    parser.add_argument('--camera-fov-y', type=float, default=None,
                        help='vertical field of view, degrees (default '
                        f'{SIM_CAMERA.fov_y_deg:g}; the horizontal one follows from '
                        '--camera-size)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--out', type=Path, required=True, help='bag directory to write')
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    base = OdometryNoise()
    noise = OdometryNoise(*(args.odom_noise * getattr(base, f) for f in (
        'rot_from_rot', 'rot_from_trans', 'trans_from_trans', 'trans_from_rot')))
    spec = SimBagSpec(args.domain, args.seed, args.duration, args.rate, 4,
                      tuple(args.camera_size), args.contexts, noise, args.storage,
                      tuple(args.kidnap_at), args.camera_height, args.camera_pitch,
                      args.camera_fov_y)
    try:
        summary = write_sim_bag(spec, args.out, args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f'dmn_sim_bag: error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {summary["path"]}: {summary["domain"]} seed {summary["seed"]}, '
          f'{summary["distance_m"]:.1f} m in {summary["duration_s"]:.0f} s, extent '
          f'{[round(v, 2) for v in summary["extent"]]}')
    for kidnap in summary['kidnaps']:
        print(f'  kidnapped at {kidnap["at_s"]:.2f} s from '
              f'{[round(v, 2) for v in kidnap["from"][:2]]} to '
              f'{[round(v, 2) for v in kidnap["to"][:2]]}')
    for topic, count in summary['counts'].items():
        print(f'  {topic:<22} {count} messages')
    return 0


if __name__ == '__main__':
    sys.exit(main())
