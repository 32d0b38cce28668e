"""
Egocentric spatial attention over the views of a view-embedding map (paper, Fig. 3).

The view key of view ``i`` seen from particle ``k`` comes from a CNN over the view's
features concatenated, in the channel dimension, with the view's egocentric
coordinates ``e_ki = (dx, dy, cos, sin)`` (the view pose in the particle's frame). The
query key comes from a CNN over the query image features. The attention weights are
the softmax over views of the scalar products of query key and view keys.

Key CNN: an unpadded 3x3 convolution over ``[features, e]``, a spatial mean, ReLU, and
a linear layer to the key. This shape is what makes the fast computation exact:

* the convolution of the constant channels ``e`` is ``M e`` at every position, so the
  convolution splits into a per-map part (view features only) and ``M e_ki``;
* the spatial mean commutes with the per-map part, so each view is reduced to a
  vector ``g_i`` once per map;
* the scalar product with the query key ``q`` folds into the last linear layer:
  ``q . (W u + b) = (W^T q) . u + q . b``, computed once per frame.

Per particle and view only ``relu(g_i + M e_ki) . (W^T q)`` remains: a few dozen
operations instead of a convolution.

Heading prior (``prior`` > 0; off in the paper's reading): a learned vector ``b`` adds
``b . e_ki`` to every logit, started at ``(0, 0, prior, 0)``, so that an untrained
attention already prefers the views that face the particle's way (``cos`` of the
relative heading). Without it, the attention of some training seeds settles on views
facing elsewhere, or its logits grow until it ignores the pose, and those runs stay
stuck; with it, the same seeds learn (docs/findings.md, "Stuck seeds").
"""

from __future__ import annotations

from dataclasses import dataclass
import math

from dmn_localization.core.encoders import (broadcast_channels, constant_input_weight, conv_part,
                                            spatial_mean)
import torch
from torch import nn, Tensor

#: Channels of the egocentric coordinates (dx, dy, cos, sin).
EGO_CHANNELS = 4


@dataclass
class QueryKey:
    """Per-frame part of the attention: ``key`` ``(B, D)``, folded ``vector`` ``(B, C1)``."""

    key: Tensor
    vector: Tensor
    offset: Tensor


class EgocentricSpatialAttention(nn.Module):
    """Attention weights ``(B, K, N)`` of K particles over the N views of a map."""

    def __init__(self, feature_channels: int, key_channels: int, key_dim: int,
                 prior: float = 0.0) -> None:
        super().__init__()
        self.key_dim = key_dim
        # a constant start, so the random initialization of the rest is unchanged; off, no
        # parameter at all (the state dict stays as saved before the option existed)
        self.ego_bias = nn.Parameter(torch.tensor([0.0, 0.0, float(prior), 0.0])) \
            if prior else None
        self.view_conv = nn.Conv2d(feature_channels + EGO_CHANNELS, key_channels, 3)
        self.view_fc = nn.Linear(key_channels, key_dim)
        self.query_conv = nn.Conv2d(feature_channels, key_channels, 3)
        self.query_fc = nn.Linear(key_channels, key_dim)

    # -- per map and per frame ------------------------------------------------------------
    def view_partials(self, view_features: Tensor) -> Tensor:
        """Reduce view features ``(B, N, C, h, w)`` to ``g`` ``(B, N, C1)``, once per map."""
        channels = view_features.shape[-3]
        return spatial_mean(conv_part(self.view_conv, view_features, 0, channels, bias=True))

    def query_key(self, query_features: Tensor) -> QueryKey:
        """Key of the query features ``(B, C, h, w)`` and its fold into the view key layer."""
        hidden = torch.relu(spatial_mean(self.query_conv(query_features)))
        key = self.query_fc(hidden) / math.sqrt(self.key_dim)
        return QueryKey(key, key @ self.view_fc.weight, key @ self.view_fc.bias)

    # -- per particle ------------------------------------------------------------------------
    def weights_fast(self, partials: Tensor, ego: Tensor, query: QueryKey) -> Tensor:
        """Attention weights ``(B, K, N)``: the softmax over views of :meth:`logits_fast`."""
        return torch.softmax(self.logits_fast(partials, ego, query), dim=-1)

    def logits_fast(self, partials: Tensor, ego: Tensor, query: QueryKey) -> Tensor:
        """
        Scalar products ``(B, K, N)`` of the query key with the view keys seen from particles.

        ``partials``: ``(B, N, C1)`` from :meth:`view_partials`; ``ego``: ``(B, K, N, 4)``.
        """
        ego_weight = constant_input_weight(self.view_conv,
                                           self.view_conv.in_channels - EGO_CHANNELS)
        hidden = torch.relu(partials[:, None] + ego @ ego_weight.T)
        logits = hidden @ query.vector[:, None, :, None]
        return self._with_prior(logits[..., 0] + query.offset[:, None, None], ego)

    def _with_prior(self, logits: Tensor, ego: Tensor) -> Tensor:
        """Add the heading prior ``b . e_ki`` to logits ``(B, K, N)`` when it is on."""
        return logits if self.ego_bias is None else logits + ego @ self.ego_bias

    def weights_direct(self, view_features: Tensor, ego: Tensor, query: QueryKey) -> Tensor:
        """Attention weights ``(B, K, N)``: the softmax over views of :meth:`logits_direct`."""
        return torch.softmax(self.logits_direct(view_features, ego, query), dim=-1)

    def logits_direct(self, view_features: Tensor, ego: Tensor, query: QueryKey) -> Tensor:
        """
        Attention logits ``(B, K, N)`` computed as described: a CNN per particle and view.

        This is the reference the fast path is tested against; it runs the key CNN on
        ``[features_i, e_ki]`` for every particle ``k`` and view ``i``.
        """
        batch, num_particles, num_views = ego.shape[:3]
        height, width = view_features.shape[-2:]
        feats = view_features[:, None].expand(batch, num_particles, *view_features.shape[1:])
        x = torch.cat([feats, broadcast_channels(ego, height, width)], dim=-3)
        hidden = torch.relu(spatial_mean(self.view_conv(x.reshape(-1, *x.shape[-3:]))))
        keys = self.view_fc(hidden).reshape(batch, num_particles, num_views, -1)
        return self._with_prior((keys * query.key[:, None, None, :]).sum(-1), ego)
