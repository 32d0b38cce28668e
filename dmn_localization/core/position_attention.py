"""
Per-position egocentric attention: at every feature position, a softmax over the views.

An option of DMN (``DMNConfig.position_attention``; off in the shipped models). The
attention of :mod:`.attention` gives each view one weight per particle, so the map
features a particle reads are one blend of whole views. Here the keys keep their
spatial layout: the view key at position ``p`` is ``W relu(G f_i (p) + M e_ki)``
(``G`` a padded 3x3 convolution, ``M`` the egocentric coordinates entering every position
alike, ``W`` a 1x1 convolution), the query key at ``p`` is ``W_q relu(G_q q (p))``, and
the weights ``a_ki(p)`` are the softmax over views ``i`` of their scalar product. The
attended map ``sum_i a_ki(p) f_i(p)`` can take each position from another view: "the
query's left half looks like view 2 from here, its right half like view 3".

Fast computation (exact; a test checks it against :meth:`logits_direct`): ``G f_i`` runs
once per map, ``W`` folds into the query key once per frame (``q . (W u + b) = (W^T q) .
u + q . b`` at each position), so per particle, view and position only ``relu(g + M e) .
u`` remains.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

from dmn_localization.core.attention import EGO_CHANNELS
from dmn_localization.core.encoders import conv_part
import torch
from torch import nn, Tensor


@dataclass
class PositionQueryKey:
    """Per-frame part: ``key`` ``(B, D, h, w)``, folded ``vector`` ``(B, C1, h, w)``, offset."""

    key: Tensor
    vector: Tensor
    offset: Tensor


def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply all of ``conv`` to ``(..., C, h, w)`` with any leading dimensions."""
    return conv_part(conv, x, 0, conv.in_channels, bias=True)


class PositionAttention(nn.Module):
    """Attention logits ``(B, K, N, h, w)`` of K particles over N views at every position."""

    def __init__(self, feature_channels: int, key_channels: int, key_dim: int) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.view_conv = nn.Conv2d(feature_channels, key_channels, 3, padding=1)
        self.view_ego = nn.Linear(EGO_CHANNELS, key_channels, bias=False)
        self.view_fc = nn.Conv2d(key_channels, key_dim, 1)
        self.query_conv = nn.Conv2d(feature_channels, key_channels, 3, padding=1)
        self.query_fc = nn.Conv2d(key_channels, key_dim, 1)

    def view_partials(self, view_features: Tensor) -> Tensor:
        """``G f_i`` ``(B, N, C1, h, w)`` of view features ``(B, N, C, h, w)``, once per map."""
        return _conv(self.view_conv, view_features)

    def query_key(self, query_features: Tensor) -> PositionQueryKey:
        """Key map of the query features ``(B, C, h, w)`` and its fold into ``W``."""
        key = self.query_fc(torch.relu(self.query_conv(query_features))) / math.sqrt(
            self.key_dim)
        weight = self.view_fc.weight[:, :, 0, 0]  # (D, C1)
        return PositionQueryKey(key, torch.einsum('bdyx,dc->bcyx', key, weight),
                                torch.einsum('bdyx,d->byx', key, self.view_fc.bias))

    def logits_fast(self, partials: Tensor, ego: Tensor, query: PositionQueryKey) -> Tensor:
        """Logits ``(B, K, N, h, w)`` from :meth:`view_partials` and ``ego`` ``(B, K, N, 4)``."""
        hidden = torch.relu(partials[:, None] + self.view_ego(ego)[..., None, None])
        return (torch.einsum('bkncyx,bcyx->bknyx', hidden, query.vector)
                + query.offset[:, None, None])

    def logits_direct(self, view_features: Tensor, ego: Tensor,
                      query: PositionQueryKey) -> Tensor:
        """Compute the same logits as described: the key CNN per particle and view."""
        batch, num_particles = ego.shape[:2]
        feats = view_features[:, None].expand(batch, num_particles, *view_features.shape[1:])
        hidden = torch.relu(_conv(self.view_conv, feats) + self.view_ego(ego)[..., None, None])
        keys = _conv(self.view_fc, hidden)  # (B, K, N, D, h, w)
        return (keys * query.key[:, None, None]).sum(dim=3)
