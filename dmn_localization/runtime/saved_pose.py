"""
The last converged pose on disk, so a restarted robot starts where it stood.

Like AMCL's ``save_pose_rate`` and ``initialize_at_saved_pose``, but in a file of its
own rather than the parameter server: a small JSON document with the pose ``(x, y,
yaw)`` in metres and radians, its 3x3 covariance, the map it belongs to
(:attr:`~dmn_localization.core.maps.ViewEmbeddingMap.identity`) and a SHA-256 checksum
of the rest. It is written atomically (a temporary file renamed over the old one), so a
crash mid-write leaves the previous pose. A file that is not such a document, is
truncated, fails its checksum, or belongs to another map is refused with
:class:`SavedPoseError`; the caller starts globally.

:func:`start_belief` decides where a localizer starts on its first map: at the saved
pose, at a configured initial pose, or uniformly over the map.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
import math
import os
from pathlib import Path
import time
from typing import Any, Dict, Optional, Sequence, Union

from dmn_localization.core.atomic_write import write_text_atomic
from dmn_localization.runtime import status
import numpy as np

FORMAT = 'dmn_localization/saved_pose'
VERSION = 1


class SavedPoseError(ValueError):
    """A saved-pose file that cannot be used; the message says why."""


@dataclass
class SavedPose:
    """A pose ``(3,)``, its covariance ``(3, 3)``, the map identity and the save time."""

    pose: np.ndarray
    covariance: np.ndarray
    map_id: str
    frame_id: str
    saved_at: float

    def _body(self) -> Dict[str, Any]:
        return {'format': FORMAT, 'version': VERSION,
                'pose': [float(v) for v in self.pose],
                'covariance': [[float(v) for v in row] for row in self.covariance],
                'map_id': self.map_id, 'frame_id': self.frame_id,
                'saved_at': float(self.saved_at)}


def _checksum(body: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_pose(path: Union[str, Path], saved: SavedPose) -> Path:
    """Write ``saved`` to ``path`` atomically (parent directories are created)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = saved._body()
    text = json.dumps({**body, 'sha256': _checksum(body)}, indent=1) + '\n'
    return write_text_atomic(path, text)


def load_pose(path: Union[str, Path], map_id: str) -> SavedPose:
    """Read the pose saved at ``path`` for the map ``map_id``; raise SavedPoseError if unusable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SavedPoseError(f'{path}: no saved pose')
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SavedPoseError(f'{path}: not a saved pose (truncated or corrupt: {exc})') from exc
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise SavedPoseError(f'{path}: not a dmn_localization saved pose')
    if data.get('version') != VERSION:
        raise SavedPoseError(f'{path}: saved pose version {data.get("version")}, this '
                             f'package reads {VERSION}')
    body = {k: v for k, v in data.items() if k != 'sha256'}
    if data.get('sha256') != _checksum(body):
        raise SavedPoseError(f'{path}: checksum mismatch (the file was altered or damaged)')
    try:
        pose = np.array(data['pose'], dtype=float)
        cov = np.array(data['covariance'], dtype=float)
        saved = SavedPose(pose, cov, str(data['map_id']), str(data['frame_id']),
                          float(data['saved_at']))
    except (KeyError, TypeError, ValueError) as exc:
        raise SavedPoseError(f'{path}: malformed saved pose ({exc})') from exc
    if pose.shape != (3,) or cov.shape != (3, 3) or not (
            np.all(np.isfinite(pose)) and np.all(np.isfinite(cov))):
        raise SavedPoseError(f'{path}: pose or covariance of the wrong shape or not finite')
    if saved.map_id != map_id:
        raise SavedPoseError(f'{path}: saved for another map ({saved.map_id}; this map is '
                             f'{map_id})')
    return saved


def default_path(node_name: str) -> Path:
    """Return ``$ROS_HOME/dmn_localization/<node name>.pose.json`` (ROS_HOME: ``~/.ros``)."""
    home = Path(os.environ.get('ROS_HOME') or Path('~/.ros').expanduser())
    safe = node_name.strip('/').replace('/', '__') or 'dmn_localization'
    return home / 'dmn_localization' / f'{safe}.pose.json'


#: Covariance of the Gaussian around a configured initial pose: AMCL's defaults
#: (initial_cov_xx = initial_cov_yy = 0.25 m^2, initial_cov_aa = (pi/12)^2).
INITIAL_POSE_COVARIANCE = np.diag([0.25, 0.25, (math.pi / 12) ** 2])


@dataclass
class StartPolicy:
    """Where a localizer starts on its first map (the node's parameters fill this)."""

    set_initial_pose: bool = False
    initial_pose: Sequence[float] = (0.0, 0.0, 0.0)
    initialize_at_saved_pose: bool = False
    saved_pose_path: str = ''


def start_belief(localizer: Any, policy: StartPolicy) -> str:
    """
    Re-initialize ``localizer`` (which has a map) as ``policy`` says; return what was done.

    The saved pose comes first when asked for and usable, then the initial pose; else the
    belief stays uniform. An unusable saved pose is reported in the returned text.
    """
    notes = []
    if policy.initialize_at_saved_pose:
        try:
            saved = load_pose(policy.saved_pose_path, localizer.map.identity)
        except SavedPoseError as exc:
            notes.append(f'saved pose not used: {exc}')
        else:
            localizer.initialize_gaussian(saved.pose, saved.covariance)
            return (f'started at the saved pose {np.round(saved.pose, 2).tolist()} from '
                    f'{policy.saved_pose_path}')
    if policy.set_initial_pose:
        localizer.initialize_gaussian(policy.initial_pose, INITIAL_POSE_COVARIANCE)
        notes.append(f'started at initial_pose {np.round(policy.initial_pose, 2).tolist()}')
    elif notes:
        notes.append('starting globally')
    return '; '.join(notes)


def saved_pose_of(localizer: Any, last: Any) -> Optional[SavedPose]:
    """Return the pose to save (``last`` frame result) while converged, else None."""
    if last is None or localizer.map is None or localizer.state != status.CONVERGED:
        return None
    return SavedPose(np.asarray(last.pose, float), np.asarray(last.covariance, float),
                     localizer.map.identity, localizer.map.frame_id, time.time())
