"""
Import the DeepMind GQN datasets (the paper's Rooms and Mazes) from their TFRecord files.

Each record is one environment: ``frames``, a list of JPEG images, and ``cameras``,
five floats per view: x, y, z, yaw, pitch (the GQN data reader's layout). The
importer keeps the planar pose (x, y, yaw), multiplied by ``scale`` metres per GQN
unit, resizes the images, and writes this project's dataset format. Reading uses the
PyPI ``tfrecord`` package; no TensorFlow is needed. The metric extent of each
environment is the bounding box of its camera positions, 5 % larger on every side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from dmn_localization.data.dataset import DatasetError, write_manifest, write_shard
from dmn_localization.data.worlds import bounding_world
import numpy as np

CAMERA_PARAMS = 5  # x, y, z, yaw, pitch
SHARD_SIZE = 100


def read_gqn_records(paths: Sequence[Path]) -> Iterator[Tuple[List[bytes], np.ndarray]]:
    """Yield ``(jpeg frames, cameras (V, 5))`` of every record in the TFRecord ``paths``."""
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f'{path}: no such TFRecord file')
        for raw in tfrecord_iterator(str(path)):
            example = example_pb2.Example()
            example.ParseFromString(bytes(raw))
            feature = example.features.feature
            if 'frames' not in feature or 'cameras' not in feature:
                raise DatasetError(f'{path}: record without frames/cameras: not a GQN file')
            frames = list(feature['frames'].bytes_list.value)
            cameras = np.asarray(feature['cameras'].float_list.value, dtype=np.float64)
            if cameras.size != CAMERA_PARAMS * len(frames):
                raise DatasetError(f'{path}: {len(frames)} frames but {cameras.size} camera '
                                   f'values (expected {CAMERA_PARAMS} per frame)')
            yield frames, cameras.reshape(len(frames), CAMERA_PARAMS)


def decode_frames(frames: Sequence[bytes], image_size: Tuple[int, int]) -> np.ndarray:
    """Decode JPEG frames into RGB ``(V, H, W, 3)`` uint8 resized to ``image_size``."""
    import cv2

    out = np.empty((len(frames), *image_size, 3), dtype=np.uint8)
    for i, data in enumerate(frames):
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f'frame {i}: not a decodable JPEG image')
        if bgr.shape[:2] != tuple(image_size):
            bgr = cv2.resize(bgr, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
        out[i] = bgr[:, :, ::-1]
    return out


def planar_poses(cameras: np.ndarray, scale: float) -> np.ndarray:
    """Return ``(V, 3)`` x, y, yaw of GQN cameras ``(V, 5)``."""
    yaw = np.remainder(cameras[:, 3] + np.pi, 2 * np.pi) - np.pi
    return np.column_stack([cameras[:, 0] * scale, cameras[:, 1] * scale, yaw])


def import_gqn(paths: Sequence[Path], out: Path, domain: str, split: str,
               image_size: Tuple[int, int] = (32, 32), scale: float = 1.0,
               max_envs: Optional[int] = None) -> Path:
    """Convert GQN TFRecord files into a dataset at ``out``; return the manifest path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards, pending = [], []
    views = None
    count = 0

    def flush() -> None:
        images = np.stack([p[0] for p in pending])
        poses = np.stack([p[1] for p in pending])
        index = len(shards)
        sums = write_shard(out, index, images, poses, [p[2] for p in pending])
        shards.append({'index': index, 'first_env': count - len(pending),
                       'envs': len(pending), 'sha256': sums})
        pending.clear()

    for frames, cameras in read_gqn_records(paths):
        if max_envs is not None and count >= max_envs:
            break
        if views is None:
            views = len(frames)
        elif len(frames) != views:
            raise DatasetError(f'record {count} has {len(frames)} views, earlier ones {views}')
        poses = planar_poses(cameras, scale)
        pending.append((decode_frames(frames, image_size), poses,
                        bounding_world(domain, count, poses).to_dict()))
        count += 1
        if len(pending) == SHARD_SIZE:
            flush()
    if pending:
        flush()
    if count == 0:
        raise DatasetError('no records found in ' + ', '.join(str(p) for p in paths))
    parameters = {'domain': domain, 'split': split, 'envs': count, 'views_per_env': views,
                  'seed': None, 'image_size': list(image_size), 'shard_size': SHARD_SIZE,
                  'generator_version': None, 'source': 'gqn-tfrecord', 'scale': scale,
                  'files': [Path(p).name for p in paths]}
    return write_manifest(out, parameters, shards, image_size, views)
