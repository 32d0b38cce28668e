"""
One configuration dataclass per model: architecture and input preprocessing.

A checkpoint stores the config (``dataclasses.asdict``) and rebuilds the model from it
with no other input (:mod:`dmn_localization.core.checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple, Type


@dataclass
class InputConfig:
    """
    What every model needs to know about its input images.

    ``image_size`` is ``(height, width)``: 32x32 for Rooms/Mazes (the paper's size),
    104x208 for StreetView-like panoramas. Pixels are scaled to
    ``(value / 255 - pixel_mean) / pixel_std``.
    """

    name: str = 'dmn-pf'
    image_size: Tuple[int, int] = (32, 32)
    pixel_mean: float = 0.5
    pixel_std: float = 0.25
    encoder_widths: Tuple[int, int, int] = (16, 32, 32)
    feature_channels: int = 32

    @property
    def kind(self) -> str:
        """``pf`` (particle filter, one log-likelihood per particle) or ``regression``."""
        return 'regression' if self.name.endswith('-regression') else 'pf'

    @property
    def out_dim(self) -> int:
        """Return the observation model's output size: 1 log-likelihood, or 3 pose offsets."""
        return 3 if self.kind == 'regression' else 1

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (lists for tuples) for checkpoints and JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: Type['InputConfig'], data: Dict[str, Any]) -> 'InputConfig':
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f'unknown {cls.__name__} fields: {sorted(unknown)}')
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass
class DMNConfig(InputConfig):
    """DMN: view-embedding map read by egocentric spatial attention (paper, section 3)."""

    name: str = 'dmn-pf'
    feature_size: Tuple[int, int] = (8, 8)
    key_channels: int = 32
    key_dim: int = 32
    head_channels: int = 32
    head_hidden: int = 64
    #: the head also reads the log-sum-exp of the attention logits (see ``core/dmn.py``)
    match_score: bool = True
    #: width of the egocentric value branch (0: off, the paper's head; see ``core/dmn.py``)
    ego_value_dim: int = 0
    #: view and query features pooled to this grid for the value branch
    ego_value_grid: Tuple[int, int] = (2, 4)
    #: the value branch also reads the particle's global pose (breaks egocentric invariance;
    #: an experiment: do the latent map baselines gain from knowing where the extent ends?)
    global_pose: bool = False
    #: the value branch also reads the particle's global heading (cos, sin) only: still
    #: invariant to moving the world, not to turning it (are the walls' axes the lead?)
    global_heading: bool = False
    #: attention weights per feature position instead of per view (see ``core/dmn.py``)
    position_attention: bool = False
    #: initial weight of a learned term ``b . e_ki`` added to the attention logits, started
    #: at ``(0, 0, value, 0)``: views facing the particle's way first (0: off; ``attention.py``)
    attention_prior: float = 0.0
    #: ``dmn-regression``: its three outputs are the pose in the mean belief's own frame
    #: (the paper: "interpreted relative to the mean initial belief"). Off: added to the
    #: belief in the map frame, as regression checkpoints saved before this option were
    #: trained; the egocentric inputs do not show the map frame's axes, so the x-y part
    #: of such an offset cannot be learned. No effect on ``dmn-pf``.
    relative_offset: bool = True
    #: width of the pose-conditioned match branch (0: off, the paper's head; see
    #: ``core/pose_match.py``)
    pose_match_dim: int = 0
    #: view and query features pooled to this grid for the pose-match branch
    pose_match_grid: Tuple[int, int] = (2, 4)
    #: shortest wavelength of the pose-match branch's Fourier features, normalized units
    #: (they halve from 4 down to it; 0.5: four of them, 0.25: five, finer position)
    pose_match_min_wavelength: float = 0.5

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict; options that are off are left out, as saved before they existed."""
        data = super().to_dict()
        if self.kind != 'regression' or not self.relative_offset:
            # a PF's dict stays as before the option; a regression's without it has it off
            del data['relative_offset']
        if not self.match_score:
            del data['match_score']  # keeps the fingerprints of those checkpoints
        if not self.ego_value_dim:
            del data['ego_value_dim'], data['ego_value_grid']
        if not self.pose_match_dim:
            del data['pose_match_dim'], data['pose_match_grid']
        if not self.pose_match_dim or self.pose_match_min_wavelength == 0.5:
            del data['pose_match_min_wavelength']  # the default keeps saved fingerprints
        for option in ('global_pose', 'global_heading', 'position_attention', 'attention_prior'):
            if not data[option]:
                del data[option]  # off: the dict of a config saved before the option existed
        return data

    @classmethod
    def from_dict(cls: Type['DMNConfig'], data: Dict[str, Any]) -> 'DMNConfig':
        """
        Inverse of :meth:`to_dict`, for configs saved before an option existed.

        A config without ``match_score`` has it off, and a regression's without
        ``relative_offset`` has that off.
        """
        older = {'match_score': False}
        if str(data.get('name', cls.name)).endswith('-regression'):
            older['relative_offset'] = False
        return super().from_dict({**older, **data})


@dataclass
class ImageMapConfig(InputConfig):
    """Latent image map: the mean of pose-conditioned context features (paper, C.2)."""

    name: str = 'image-pf'
    feature_size: Tuple[int, int] = (8, 8)
    head_channels: int = 48
    head_hidden: int = 96


@dataclass
class VectorMapConfig(InputConfig):
    """Latent vector map: the mean of pose-conditioned context vectors (paper, C.2)."""

    name: str = 'vector-pf'
    feature_size: Tuple[int, int] = (4, 4)
    vector_dim: int = 32
    head_hidden: int = 80
