"""
``dmn_localization_interfaces/ViewEmbeddingMap`` <-> :class:`ViewEmbeddingMap`.

The embedding tensor travels as little-endian float32 or float16 bytes with its shape;
view poses as ``geometry_msgs/Pose`` (planar: x, y and yaw), the extent as four
numbers, with the model name and the encoder fingerprint so that a receiver can refuse
a map made by another encoder.
"""

from __future__ import annotations

from typing import Any, Callable

from dmn_localization.core.maps import MapError, ViewEmbeddingMap
from dmn_localization.messages.conversions import make_pose, pose_to_xyyaw
import numpy as np
import torch

DTYPES = {'float32': (0, np.dtype('<f4')), 'float16': (1, np.dtype('<f2'))}


class MapMessageError(MapError):
    """A ViewEmbeddingMap message whose fields do not agree."""


def map_to_msg(the_map: ViewEmbeddingMap, dtype: str, msg_factory: Callable[[], Any],
               pose_factory: Callable[[], Any]) -> Any:
    """Fill a new ViewEmbeddingMap message from ``the_map`` with ``dtype`` embeddings."""
    if dtype not in DTYPES:
        raise ValueError(f'map dtype must be one of {", ".join(DTYPES)}, got {dtype!r}')
    code, np_dtype = DTYPES[dtype]
    msg = msg_factory()
    msg.header.frame_id = the_map.frame_id
    msg.model_name = the_map.model_name
    msg.fingerprint = the_map.fingerprint
    msg.view_poses = [make_pose(x, y, yaw, pose_factory)
                      for x, y, yaw in the_map.poses.detach().cpu().numpy().astype(float)]
    msg.extent = [float(v) for v in the_map.extent.detach().cpu().numpy()]
    embeddings = the_map.embeddings.detach().cpu().numpy().astype(np_dtype)
    msg.shape = [int(s) for s in embeddings.shape]
    msg.dtype = code
    msg.data = embeddings.tobytes()
    return msg


def msg_to_map(msg: Any) -> ViewEmbeddingMap:
    """Rebuild a map (float32 embeddings) from a message; raise MapMessageError if bad."""
    by_code = dict(DTYPES.values())
    if msg.dtype not in by_code:
        raise MapMessageError(f'unknown embedding dtype code {msg.dtype}')
    shape = tuple(int(s) for s in msg.shape)
    data = bytes(msg.data)
    expected = int(np.prod(shape)) * by_code[msg.dtype].itemsize if shape else 0
    if not shape or len(data) != expected:
        raise MapMessageError(f'embedding shape {list(shape)} needs {expected} bytes, the '
                              f'message holds {len(data)}')
    if shape[0] != len(msg.view_poses):
        raise MapMessageError(f'{shape[0]} embeddings but {len(msg.view_poses)} view poses')
    try:
        poses = np.array([pose_to_xyyaw(p) for p in msg.view_poses], dtype=np.float32)
    except ValueError as exc:
        raise MapMessageError(f'bad view pose: {exc}') from exc
    embeddings = np.frombuffer(data, dtype=by_code[msg.dtype]).reshape(shape).astype(np.float32)
    extent = np.asarray(msg.extent, dtype=np.float32)
    if extent.shape != (4,) or extent[0] >= extent[2] or extent[1] >= extent[3]:
        raise MapMessageError(f'bad extent {extent.tolist()}')
    return ViewEmbeddingMap(torch.from_numpy(embeddings.copy()), torch.from_numpy(poses),
                            torch.from_numpy(extent), msg.model_name, msg.fingerprint,
                            msg.header.frame_id or 'map')
