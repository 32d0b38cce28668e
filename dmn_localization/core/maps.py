"""
The view-embedding map: per-view latent embeddings with their poses.

Built from N posed context images by a model's view encoder (a CNN shared across
contexts). It can be extended with more views, merged with another map of the same
encoder, moved to a device, and serialized with the metric extent and the encoder
fingerprint, so a map is never read by a different encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import io
from pathlib import Path
from typing import Any, Dict, Optional, Union

from dmn_localization.core import geometry
from dmn_localization.core.atomic_write import write_atomic
from dmn_localization.core.models import encoder_fingerprint
from dmn_localization.core.preprocessing import preprocess_images
import numpy as np
import torch
from torch import nn, Tensor

MAP_FORMAT = 'dmn_localization.view_embedding_map'
MAP_VERSION = 1
#: poses (metres, radians) and extents closer than this are the same in
#: :meth:`ViewEmbeddingMap.has_views_of`
MATCH_POSE_TOLERANCE = 1e-3
#: relative and absolute embedding tolerance there: float16 keeps ~3 decimal digits
MATCH_EMBEDDING_TOLERANCE = 4e-3


class MapError(ValueError):
    """Base class of view-embedding map errors."""


class MapFingerprintError(MapError):
    """The map was made by an encoder other than the model's: it must not be read."""


class MapFileError(MapError):
    """A map file that is not a map, is of an unknown version, or is corrupted."""


def _checksum(embeddings: Tensor, poses: Tensor, extent: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (embeddings, poses, extent):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ViewEmbeddingMap:
    """
    A learned map of one environment.

    ``embeddings`` ``(N, ...)`` (e.g. ``(N, C, h, w)`` for DMN); ``poses`` ``(N, 3)``
    x, y, yaw in metres and radians in ``frame_id``; ``extent`` ``(4,)`` metres
    ``[x_min, y_min, x_max, y_max]`` that normalizes poses for the model.
    """

    embeddings: Tensor
    poses: Tensor
    extent: Tensor
    model_name: str
    fingerprint: str
    frame_id: str = 'map'

    @property
    def num_views(self) -> int:
        """Return the number of views N."""
        return int(self.poses.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the embeddings."""
        return self.embeddings.device

    def normalized_poses(self) -> Tensor:
        """View poses ``(N, 3)`` in the model's normalized coordinates."""
        return geometry.normalize_poses(self.poses, self.extent)

    @classmethod
    @torch.no_grad()
    def build(cls, model: nn.Module, images: Union[np.ndarray, Tensor],
              poses: Union[np.ndarray, Tensor], extent: Union[np.ndarray, Tensor],
              frame_id: str = 'map') -> 'ViewEmbeddingMap':
        """
        Embed context images ``(N, H, W, 3)`` uint8 taken at ``poses`` ``(N, 3)`` metres.

        Images of any size are resized to the model's input size. The embeddings are
        made on the model's device.
        """
        device = next(model.parameters()).device
        poses_t = torch.as_tensor(np.asarray(poses, dtype=np.float32), device=device)
        extent_t = torch.as_tensor(np.asarray(extent, dtype=np.float32), device=device)
        if poses_t.ndim != 2 or poses_t.shape[1] != 3 or len(images) != poses_t.shape[0]:
            raise MapError(f'need N images and poses (N, 3); got {len(images)} images and '
                           f'poses of shape {tuple(poses_t.shape)}')
        if poses_t.shape[0] == 0:
            raise MapError('a map needs at least one view')
        if not torch.all(torch.isfinite(poses_t)):
            raise MapError('view poses must be finite')
        pixels = preprocess_images(images, model.config, device=device)
        normalized = geometry.normalize_poses(poses_t, extent_t)
        was_training = model.training
        model.eval()
        embeddings = model.embed_views(pixels[None], normalized[None])[0]
        model.train(was_training)
        return cls(embeddings, poses_t, extent_t, model.config.name,
                   encoder_fingerprint(model), frame_id)

    def extend(self, model: nn.Module, images: Union[np.ndarray, Tensor],
               poses: Union[np.ndarray, Tensor]) -> 'ViewEmbeddingMap':
        """Return this map with more views embedded by ``model`` (same extent and frame)."""
        self.check_compatible(model)
        more = ViewEmbeddingMap.build(model, images, poses, self.extent.cpu().numpy(),
                                      self.frame_id)
        return self.merge(more)

    def merge(self, other: 'ViewEmbeddingMap') -> 'ViewEmbeddingMap':
        """
        Union of the views of two maps of the same encoder and frame.

        DMN view embeddings do not depend on the view poses, so maps of different
        extents merge into one over the union of the extents. The latent map baselines
        embed normalized poses: their maps merge only when the extents are equal.
        """
        if other.fingerprint != self.fingerprint:
            raise MapFingerprintError(
                f'cannot merge maps of encoders {self.fingerprint} and {other.fingerprint}')
        if other.frame_id != self.frame_id:
            raise MapError(f'cannot merge maps in frames {self.frame_id!r} and '
                           f'{other.frame_id!r}')
        other_extent = other.extent.to(self.device)
        extent = self.extent
        if not torch.allclose(other_extent, self.extent):
            if not self.model_name.startswith('dmn-'):
                raise MapError(f'cannot merge {self.model_name} maps of different extents: '
                               'its embeddings depend on the normalized view poses')
            extent = torch.cat([torch.minimum(self.extent[:2], other_extent[:2]),
                                torch.maximum(self.extent[2:], other_extent[2:])])
        return ViewEmbeddingMap(
            torch.cat([self.embeddings, other.embeddings.to(self.device)]),
            torch.cat([self.poses, other.poses.to(self.device)]),
            extent, self.model_name, self.fingerprint, self.frame_id)

    def to(self, device: Union[str, torch.device]) -> 'ViewEmbeddingMap':
        """Return the map on ``device``."""
        return ViewEmbeddingMap(self.embeddings.to(device), self.poses.to(device),
                                self.extent.to(device), self.model_name, self.fingerprint,
                                self.frame_id)

    @property
    def identity(self) -> str:
        """
        Return the identity of the map: what makes two maps the same map.

        That is the view poses (to the millimetre), extent, frame and encoder. The same
        context views embedded again (on another device, or sent as float16) give the
        same identity; other views or another encoder do not.
        """
        digest = hashlib.sha256()
        for values in (self.poses, self.extent):
            rounded = np.round(values.detach().cpu().double().numpy(), 3) + 0.0
            digest.update(rounded.tobytes())
        digest.update(f'{self.frame_id}|{self.fingerprint}'.encode())
        return digest.hexdigest()[:16]

    def has_views_of(self, other: 'ViewEmbeddingMap') -> bool:
        """
        Return True when every view of ``other`` is a view of this map.

        A view matches when encoder and frame agree, the pose is the same to the
        millimetre (and milliradian) and the embedding is the same to float16 precision:
        the same context views embedded again, or sent over a topic as float16, match.
        For the latent map baselines, whose embeddings carry the normalized view poses,
        the extents must agree as well.
        """
        if (other.fingerprint, other.frame_id) != (self.fingerprint, self.frame_id):
            return False
        theirs = other.to(self.device)
        if not self.model_name.startswith('dmn-') and not torch.allclose(
                theirs.extent, self.extent, rtol=0.0, atol=MATCH_POSE_TOLERANCE):
            return False
        if theirs.embeddings.shape[1:] != self.embeddings.shape[1:]:
            return False
        difference = theirs.poses[:, None, :] - self.poses[None, :, :]
        difference[..., 2] = torch.remainder(difference[..., 2] + torch.pi,
                                             2 * torch.pi) - torch.pi
        same_pose = difference.abs().amax(dim=2) <= MATCH_POSE_TOLERANCE  # (M, N)
        for k, candidates in enumerate(same_pose):
            if not any(torch.allclose(theirs.embeddings[k], self.embeddings[i],
                                      rtol=MATCH_EMBEDDING_TOLERANCE,
                                      atol=MATCH_EMBEDDING_TOLERANCE)
                       for i in torch.nonzero(candidates).flatten().tolist()):
                return False
        return True

    def contains(self, other: 'ViewEmbeddingMap') -> bool:
        """Return True when merging ``other`` into this map would change nothing."""
        theirs = other.extent.to(self.device)
        return (bool(torch.all(theirs[:2] >= self.extent[:2] - MATCH_POSE_TOLERANCE))
                and bool(torch.all(theirs[2:] <= self.extent[2:] + MATCH_POSE_TOLERANCE))
                and self.has_views_of(other))

    def same_map(self, other: 'ViewEmbeddingMap') -> bool:
        """
        Return True when ``other`` has exactly this map's views over the same extent.

        Stricter than equal :attr:`identity` (which keys saved poses by the view poses
        alone): the embeddings must match too, in any order of the views.
        """
        return (other.num_views == self.num_views
                and torch.allclose(other.extent.to(self.device), self.extent, rtol=0.0,
                                   atol=MATCH_POSE_TOLERANCE)
                and self.has_views_of(other) and other.has_views_of(self))

    def check_compatible(self, model: nn.Module) -> None:
        """Raise :class:`MapFingerprintError` unless ``model``'s encoder made this map."""
        expected = encoder_fingerprint(model)
        if self.fingerprint != expected:
            raise MapFingerprintError(
                f'map made by encoder {self.fingerprint} ({self.model_name}); this model '
                f'is {model.config.name} with encoder {expected}')

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of CPU tensors and strings, with format, version and checksum."""
        cpu = self.to('cpu')
        return {
            'format': MAP_FORMAT, 'version': MAP_VERSION,
            'model_name': self.model_name, 'fingerprint': self.fingerprint,
            'frame_id': self.frame_id, 'embeddings': cpu.embeddings, 'poses': cpu.poses,
            'extent': cpu.extent,
            'checksum': _checksum(cpu.embeddings, cpu.poses, cpu.extent),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ViewEmbeddingMap':
        """Inverse of :meth:`to_dict`; raises :class:`MapFileError` when it does not check."""
        if not isinstance(data, dict) or data.get('format') != MAP_FORMAT:
            raise MapFileError('not a dmn_localization view-embedding map')
        if data.get('version') != MAP_VERSION:
            raise MapFileError(f'map format version {data.get("version")} is not supported '
                               f'(this build reads version {MAP_VERSION})')
        try:
            embeddings, poses, extent = data['embeddings'], data['poses'], data['extent']
            if _checksum(embeddings, poses, extent) != data['checksum']:
                raise MapFileError('map checksum mismatch: the file is corrupted')
            return cls(embeddings, poses, extent, str(data['model_name']),
                       str(data['fingerprint']), str(data['frame_id']))
        except (KeyError, TypeError, AttributeError) as exc:
            raise MapFileError(f'map file is incomplete: {exc}') from exc

    def save(self, path: Union[str, Path]) -> None:
        """Write the map to ``path`` atomically (a temporary file, then a rename)."""
        data = self.to_dict()
        write_atomic(path, lambda tmp: torch.save(data, tmp))

    @classmethod
    def load(cls, path: Union[str, Path],
             device: Optional[Union[str, torch.device]] = None) -> 'ViewEmbeddingMap':
        """Read a map written by :meth:`save`; refuse foreign or corrupted files."""
        raw = Path(path).read_bytes()
        try:
            data = torch.load(io.BytesIO(raw), map_location='cpu', weights_only=True)
        except Exception as exc:  # noqa: B902 - any unpickling failure means a bad file
            raise MapFileError(f'{path}: not a readable map file ({exc})') from exc
        result = cls.from_dict(data)
        return result.to(device) if device is not None else result
