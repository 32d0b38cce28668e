"""
Model checkpoints that rebuild their model with no other input.

A checkpoint holds the weights, the config (architecture and input preprocessing:
image size, pixel normalization), the typical metric extent of the training
environments (for reference: a map's extent comes with the map), the encoder
fingerprint and free-form training metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import io
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from dmn_localization.core.atomic_write import write_atomic
from dmn_localization.core.camera import CameraSpec, SIM_CAMERA
from dmn_localization.core.models import (build_model, encoder_fingerprint, LEARNED_MODELS,
                                          UnknownModelError)
import torch
from torch import nn

CHECKPOINT_FORMAT = 'dmn_localization.checkpoint'
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable model checkpoint; the message says why."""


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what came with it."""

    model: nn.Module
    extent: Sequence[float]
    fingerprint: str
    metadata: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def name(self) -> str:
        """Model name, e.g. ``dmn-pf``."""
        return self.model.config.name

    @property
    def camera(self) -> CameraSpec:
        """Return the camera the model was trained with (metadata ``camera``; else the sim's)."""
        data = self.metadata.get('camera')
        return SIM_CAMERA if not data else CameraSpec.from_dict(data)


def samples_behind(metadata: Dict[str, Any]) -> Optional[int]:
    """
    Training samples behind a checkpoint's weights, or None when it does not say.

    A run started from another checkpoint (``dmn_train --init-from``) records its own
    ``samples`` and, as ``init_samples``, every sample behind its starting weights, so a
    chain of runs adds up.
    """
    if 'samples' not in metadata and 'init_samples' not in metadata:
        return None
    return int(metadata.get('samples', 0)) + int(metadata.get('init_samples', 0))


def save_checkpoint(path: Union[str, Path], model: nn.Module, extent: Sequence[float],
                    metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` with its config, training ``extent`` (metres) and ``metadata``."""
    state = {k: v.detach().to('cpu') for k, v in model.state_dict().items()}
    data = {
        'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION,
        'model_name': model.config.name, 'config': model.config.to_dict(),
        'state_dict': state, 'extent': [float(v) for v in extent],
        'fingerprint': encoder_fingerprint(model), 'metadata': dict(metadata or {}),
    }
    write_atomic(path, lambda tmp: torch.save(data, tmp))


def load_checkpoint(path: Union[str, Path],
                    device: Union[str, torch.device] = 'cpu') -> LoadedModel:
    """Rebuild the model stored at ``path`` on ``device``; raise CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        data = torch.load(io.BytesIO(path.read_bytes()), map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: B902 - any unpickling failure means a bad file
        raise CheckpointError(f'{path}: not a readable checkpoint ({exc})') from exc
    if not isinstance(data, dict) or data.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{path}: not a dmn_localization checkpoint')
    if data.get('version') != CHECKPOINT_VERSION:
        raise CheckpointError(f'{path}: checkpoint version {data.get("version")} is not '
                              f'supported (this build reads {CHECKPOINT_VERSION})')
    name = data.get('model_name')
    if name not in LEARNED_MODELS:
        raise CheckpointError(f'{path}: unknown model {name!r}')
    try:
        config = LEARNED_MODELS[name][1].from_dict(data['config'])
        model = build_model(config)
        model.load_state_dict(data['state_dict'])
    except (KeyError, ValueError, RuntimeError, UnknownModelError) as exc:
        raise CheckpointError(f'{path}: does not match model {name}: {exc}') from exc
    fingerprint = encoder_fingerprint(model)
    if fingerprint != data.get('fingerprint'):
        raise CheckpointError(f'{path}: encoder fingerprint {fingerprint} differs from the '
                              f'recorded {data.get("fingerprint")}: the file is corrupted')
    model.to(device).eval()
    return LoadedModel(model, tuple(data['extent']), fingerprint, data.get('metadata', {}),
                       path)
