"""
Every model of the paper by name, behind one interface.

Learned models (``nn.Module`` with ``config``, ``view_encoder`` and these methods)::

    embed_views(images (B, N, 3, H, W), poses (B, N, 3)) -> embeddings (B, N, ...)
    prepare_map(embeddings, poses)                        -> map context (per map)
    prepare_query(images (B, 3, H, W))                    -> query context (per frame)
    observe(map_ctx, query_ctx, particles (B, K, 3), fast=True) -> (B, K, out_dim)

``out_dim`` is 1 (a log-likelihood per particle) for ``*-pf`` models and 3 (a pose
offset from the single particle, the mean belief) for ``*-regression`` models.
``closest-context`` and ``uninformed`` learn nothing; :mod:`.inference` runs them.
Poses given to models are normalized (:mod:`.geometry`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Tuple, Type

from dmn_localization.core.configs import DMNConfig, ImageMapConfig, InputConfig, VectorMapConfig
from dmn_localization.core.dmn import DMN
from dmn_localization.core.latent_maps import LatentImageMap, LatentVectorMap
from torch import nn

#: name -> (model class, config class)
LEARNED_MODELS: Dict[str, Tuple[Type[nn.Module], Type[InputConfig]]] = {
    'dmn-pf': (DMN, DMNConfig),
    'dmn-regression': (DMN, DMNConfig),
    'image-pf': (LatentImageMap, ImageMapConfig),
    'image-regression': (LatentImageMap, ImageMapConfig),
    'vector-pf': (LatentVectorMap, VectorMapConfig),
    'vector-regression': (LatentVectorMap, VectorMapConfig),
}
NON_LEARNED_MODELS = ('closest-context', 'uninformed')
ALL_MODELS = tuple(LEARNED_MODELS) + NON_LEARNED_MODELS


class UnknownModelError(KeyError):
    """A model name that is not one of :data:`ALL_MODELS`."""


def config_for(name: str, **overrides: Any) -> InputConfig:
    """Return the default config of model ``name`` with ``overrides`` applied."""
    if name not in LEARNED_MODELS:
        raise UnknownModelError(
            f'unknown learned model {name!r}; choose one of {", ".join(LEARNED_MODELS)}')
    return LEARNED_MODELS[name][1](name=name, **overrides)


def build_model(config: InputConfig) -> nn.Module:
    """Build the learned model described by ``config`` (its ``name`` picks the class)."""
    if config.name not in LEARNED_MODELS:
        raise UnknownModelError(f'unknown learned model {config.name!r}')
    cls, config_cls = LEARNED_MODELS[config.name]
    if not isinstance(config, config_cls):
        raise TypeError(f'{config.name} needs a {config_cls.__name__}, got '
                        f'{type(config).__name__}')
    return cls(config)


def count_parameters(model: nn.Module) -> int:
    """Count the learnable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_fingerprint(model: nn.Module) -> str:
    """
    Hash of the view encoder's weights and the model config (16 hex digits).

    A view-embedding map records the fingerprint of the encoder that made it; a model
    with another fingerprint must not read it.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.view_encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to('cpu').contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def parameter_table() -> str:
    """Parameter counts of every learned model at its default config, as a text table."""
    reference = count_parameters(build_model(config_for('dmn-pf')))
    rows = [f'{"model":<20}{"parameters":>12}{"vs dmn-pf":>11}']
    for name in LEARNED_MODELS:
        count = count_parameters(build_model(config_for(name)))
        rows.append(f'{name:<20}{count:>12,}{count / reference - 1:>+11.1%}')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(parameter_table())
