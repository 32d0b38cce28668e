"""
Benchmark of the node over DDS: image-to-pose latency, frames dropped, memory over time.

    python -m dmn_localization.bench.node_bench [--out runs/bench/node.json]
        [--soak-minutes 10]

The node runs in its own process (random weights: speed does not depend on training)
with a map of 8 views. 128x128 rgb8 frames and odometry are published from this
process. Latency: frames at 5 Hz (no queueing), from publishing a frame to receiving
the pose stamped with it, median and p99, at K=256 and K=2048. Drops: frames at 30 Hz
for 20 s at K=256, the share that got no pose. Memory: the node's resident set after 1
minute (half-way through a shorter soak) and after ``--soak-minutes`` of 30 Hz input at
K=2048. For the 30 Hz runs the node's
own /diagnostics counters say where every frame went: processed, dropped while the node
was busy with an earlier one, or never received. Targets on the 2-core
CPU: K=2048 median at most 50 ms; K=256 processes every frame at 30 Hz; no memory growth
(at most 5 % between the two readings).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from dmn_localization.tools.node_process import isolate_dds, NodeProcess
import numpy as np

CAMERA = (128, 128)
TARGET_MEDIAN_MS = 50.0
TARGET_GROWTH = 0.05


class Driver:
    """This process's side: builds the map, publishes frames and odometry, times poses."""

    def __init__(self, context: Any) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data, QoSProfile

        from diagnostic_msgs.msg import DiagnosticArray
        from dmn_localization.messages.image_conversion import array_to_imgmsg
        from dmn_localization_interfaces.srv import BuildMap
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import Image

        self.node = rclpy.create_node('dmn_node_bench', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.build_map = self.node.create_client(BuildMap, '/dmn_localization/build_map')
        self.image_pub = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.odom_pub = self.node.create_publisher(Odometry, 'odom', QoSProfile(depth=100))
        self.received: Dict[int, float] = {}
        self.node.create_subscription(PoseWithCovarianceStamped, 'pose', self._on_pose,
                                      QoSProfile(depth=100))
        self.diagnostics: Dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      QoSProfile(depth=10))
        self.published = 0
        rng = np.random.default_rng(0)
        self.frame = array_to_imgmsg(rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8),
                                     'rgb8')
        self.odom = Odometry()
        self.odom.header.frame_id, self.odom.child_frame_id = 'odom', 'base_link'
        self.odom.pose.pose.orientation.w = 1.0
        self.stamp_ns = 10**9

    def _on_pose(self, msg: Any) -> None:
        key = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.received[key] = time.monotonic()

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.diagnostics = {kv.key: kv.value for kv in status.values}

    def node_counts(self) -> Dict[str, int]:
        """
        Account for every frame published so far, from the node's newest /diagnostics.

        ``processed`` and ``dropped_by_node`` (a newer frame replaced it while the node was
        busy) are the node's counters; ``not_received`` is what never reached the node
        (lost by best-effort transport, or still on the way).
        """
        deadline = time.monotonic() + 3.0
        self.diagnostics = {}
        while not self.diagnostics and time.monotonic() < deadline:  # a fresh report (1 Hz)
            self.executor.spin_once(timeout_sec=0.05)
        processed = int(self.diagnostics.get('frames_processed', -1))
        dropped = int(self.diagnostics.get('frames_dropped', -1))
        return {'published': self.published, 'processed': processed,
                'dropped_by_node': dropped,
                'not_received': self.published - processed - dropped}

    def make_map(self) -> None:
        from dmn_localization.messages.conversions import build_map_request
        from dmn_localization.ros.service_call import call_idempotent, spin_wait

        if not self.build_map.wait_for_service(timeout_sec=120.0):
            raise RuntimeError('the node did not come up')
        rng = np.random.default_rng(1)
        images = [rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8) for _ in range(8)]
        poses = np.array([(rng.uniform(0, 8), rng.uniform(0, 8), rng.uniform(-3, 3))
                          for _ in range(8)])
        response = call_idempotent(self.build_map, build_map_request(images, poses),
                                   spin_wait(self.executor), 120.0)
        if response is None or not response.success:
            raise RuntimeError(f'build_map failed: {response}')
        deadline = time.monotonic() + 60.0
        while self.image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)

    def publish(self) -> int:
        """Publish odometry and a frame with the next stamp; return the stamp (ns)."""
        self.stamp_ns += 10**7  # stamps only need to increase
        for msg in (self.odom, self.frame):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp_ns, 10**9)
        self.odom_pub.publish(self.odom)
        self.image_pub.publish(self.frame)
        self.published += 1
        return self.stamp_ns

    def stream(self, rate_hz: float, seconds: float,
               on_tick: Optional[Any] = None) -> Dict[int, float]:
        """Publish at ``rate_hz`` for ``seconds``; return publish times by stamp."""
        sent: Dict[int, float] = {}
        start = time.monotonic()
        next_time = start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_time:
                sent[self.publish()] = time.monotonic()
                next_time += 1.0 / rate_hz
                if on_tick is not None:
                    on_tick(now - start)
            self.executor.spin_once(timeout_sec=max(0.0, min(0.002, next_time - now)))
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # the last poses
            self.executor.spin_once(timeout_sec=0.01)
        return sent

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def run_case(particles: int, action: Any) -> Dict[str, Any]:
    """Start a node with ``particles``, build the map, run ``action(driver, node)``."""
    import rclpy

    with tempfile.TemporaryDirectory() as tmp:
        import torch

        from dmn_localization.core.checkpoint import save_checkpoint
        from dmn_localization.core.models import build_model, config_for

        torch.manual_seed(0)
        checkpoint = Path(tmp) / 'dmn.pt'
        save_checkpoint(checkpoint, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
        # no update gating: the robot here stands, and every frame must be a full update
        node = NodeProcess(['-p', f'model_path:={checkpoint}', '-p', 'publish_pose_when:=always',
                            '-p', f'num_particles:={particles}', '-p', 'publish_map:=false',
                            '-p', 'update_min_d:=0.0', '-p', 'update_min_a:=0.0'])
        context = rclpy.Context()
        rclpy.init(context=context)
        driver = Driver(context)
        try:
            driver.make_map()
            return action(driver, node)
        finally:
            driver.close()
            rclpy.shutdown(context=context)
            node.stop()


def latency(driver: Driver, node: NodeProcess, frames: int = 100) -> Dict[str, Any]:
    """Frames at 5 Hz: publish-to-pose latency in milliseconds."""
    driver.stream(5.0, 2.0)  # warm-up
    driver.received.clear()
    sent = driver.stream(5.0, frames / 5.0)
    ms = [(driver.received[k] - t) * 1000 for k, t in sent.items() if k in driver.received]
    return {'frames': len(sent), 'answered': len(ms), 'median_ms': float(np.median(ms)),
            'p99_ms': float(np.percentile(ms, 99))}


def drops(driver: Driver, node: NodeProcess, seconds: float = 20.0) -> Dict[str, Any]:
    """Frames at 30 Hz: the share that got no pose."""
    driver.stream(30.0, 2.0)
    driver.received.clear()
    sent = driver.stream(30.0, seconds)
    answered = sum(1 for k in sent if k in driver.received)
    return {'frames': len(sent), 'answered': answered,
            'dropped_share': 1.0 - answered / len(sent),
            'all_frames_of_the_run': driver.node_counts()}


def soak(minutes: float) -> Any:
    """
    Frames at 30 Hz for ``minutes``: the node's resident memory early on and at the end.

    The early reading is at 1 minute, or half-way through a soak shorter than 2 minutes.
    """
    first_s = min(60.0, minutes * 30.0)

    def action(driver: Driver, node: NodeProcess) -> Dict[str, Any]:
        readings: Dict[str, float] = {'first_reading_min': first_s / 60.0}

        def tick(elapsed: float) -> None:
            if elapsed >= first_s and 'first_mib' not in readings:
                readings['first_mib'] = node.rss_mib()

        sent = driver.stream(30.0, minutes * 60.0, tick)
        readings['at_end_mib'] = node.rss_mib()
        readings.setdefault('first_mib', readings['at_end_mib'])  # a soak of under 2 ticks
        readings['growth'] = readings['at_end_mib'] / readings['first_mib'] - 1.0
        readings['minutes'] = minutes
        readings['frames'] = len(sent)
        readings['answered'] = sum(1 for k in sent if k in driver.received)
        readings['all_frames_of_the_run'] = driver.node_counts()
        return readings
    return action


def accounting(case: Dict[str, Any]) -> str:
    """Say where the frames of a whole run (warm-up included) went."""
    c = case['all_frames_of_the_run']
    return (f'of all {c["published"]} frames of the run (warm-up included) the node '
            f'processed {c["processed"]}, dropped {c["dropped_by_node"]} while busy, '
            f'never received {c["not_received"]}')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark, print the numbers against the targets, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('runs/bench/node.json'))
    p.add_argument('--soak-minutes', type=float, default=10.0)
    a = p.parse_args(argv)
    if not a.soak_minutes > 0:
        p.error(f'--soak-minutes must be positive, got {a.soak_minutes:g}')
    isolate_dds()
    results: Dict[str, Any] = {'machine': {'platform': platform.platform(),
                                           'cpus': os.cpu_count()}}
    for particles in (256, 2048):
        lat = run_case(particles, latency)
        results[f'latency_k{particles}'] = lat
        print(f'K={particles:>5}: image -> pose over DDS: median {lat["median_ms"]:.1f} ms, '
              f'p99 {lat["p99_ms"]:.1f} ms ({lat["answered"]}/{lat["frames"]} frames at 5 Hz)',
              flush=True)
    drop = run_case(256, drops)
    results['drops_k256_30hz'] = drop
    print(f'K=  256 at 30 Hz: {drop["answered"]}/{drop["frames"]} frames answered, '
          f'{drop["dropped_share"]:.1%} dropped; {accounting(drop)}', flush=True)
    mem = run_case(2048, soak(a.soak_minutes))
    results['memory_k2048_30hz'] = mem
    print(f'K= 2048 at 30 Hz: node memory {mem["first_mib"]:.0f} MiB after '
          f'{mem["first_reading_min"]:g} min, '
          f'{mem["at_end_mib"]:.0f} MiB after {a.soak_minutes:g} min '
          f'({mem["growth"]:+.1%}); {mem["answered"]}/{mem["frames"]} frames answered; '
          f'{accounting(mem)}')
    median = results['latency_k2048']['median_ms']
    print(f'targets: K=2048 median {median:.1f} <= {TARGET_MEDIAN_MS:.0f} ms: '
          f'{"met" if median <= TARGET_MEDIAN_MS else "MISSED"}; K=256 every frame at 30 Hz: '
          f'{"met" if drop["dropped_share"] == 0 else "MISSED"}; memory growth '
          f'<= {TARGET_GROWTH:.0%}: {"met" if mem["growth"] <= TARGET_GROWTH else "MISSED"}')
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + '\n')
    print(f'wrote {a.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
