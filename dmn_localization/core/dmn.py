"""
The DMN observation model: view-embedding map, egocentric attention, conv-dense head.

For a particle ``s_k``, the attention (:mod:`.attention`) weighs the map's views by
their egocentric keys; the attended map features ``sum_i a_ki f_i`` and the attended
egocentric coordinates ``sum_i a_ki e_ki`` are concatenated with the query features
and pass through the head: an unpadded 3x3 convolution, ReLU, spatial mean, and two
dense layers with one output (the particle's log-likelihood; three outputs, a pose
offset, for the regression variant). Parameters are shared across particles.

Egocentric value branch (``ego_value_dim`` > 0; off in the paper's architecture): in the
head above, a particle's pose reaches the output only through the attention weights and
four attended coordinates that enter a single linear layer, so the head cannot ask
"does the query look like view ``i`` seen from ``e_ki``" in any non-linear way. The
branch gives it that: per particle and view, ``z_ki = relu(V p(f_i) + Q p(q) + E(e_ki))``
with ``p`` an average pool of the features to a small grid, ``V`` and ``Q`` linear maps
and ``E`` a two-layer MLP of the egocentric coordinates; the head reads the attended
``sum_i a_ki z_ki`` beside its convolutional features. ``V p(f_i)`` is computed once per
map, ``Q p(q)`` once per frame; per particle and view only ``E`` and a sum remain.

Per-position attention (``position_attention``; off in the paper's reading): the
attention weights are computed at every feature position instead of once per view
(:mod:`.position_attention`), so the attended map can take each position from another
view; the head reads the attended map as before and the egocentric coordinates
attended with the weights averaged over positions. Its fast head unfolds the weights
over the head convolution's window: ``conv(sum_i a_i f_i)(p) = sum_{i,d} a_i(p + d)
W_d f_i(p + d)``, with ``W_d f_i`` computed once per map.

Pose-conditioned match branch (``pose_match_dim`` > 0; off in the paper's architecture):
a two-layer MLP per particle and view over the pooled view and query features and
Fourier features of the egocentric pose (:mod:`.pose_match`). Its score, the
log-mean-exp over views of the per-view match, is added to the log-likelihood and read
by the head with the match-weighted hidden units; it gives the likelihood a non-linear
dependence on where the particle stands relative to each view.

``attention_prior`` starts the attention preferring the views that face the particle's
way (:mod:`.attention`); it keeps the egocentric invariance.

``global_pose`` (the branch also reads the particle's global ``(x, y, cos, sin)``) and
``global_heading`` (only its ``(cos, sin)``) are experiments on what the latent map
baselines gain from global coordinates; the first breaks the invariance to moving the
world, the second only that to turning it.

Two computations of the same function (a test checks they agree):

* ``direct``: per particle and view as the paper describes: the key CNN on every
  ``[f_i, e_ki]``, the attended features per particle, the head convolution on every
  particle's ``[attended, query, e]``;
* ``fast``: the head convolution is linear in its input, and the attended features
  are a weighted sum, so ``conv(sum_i a_ki f_i) = sum_i a_ki conv(f_i)``: the
  convolution of each view runs once per map, that of the query once per frame, and
  the egocentric channels are constant over space (one small matrix). Per particle
  only a weighted sum of precomputed maps, a ReLU, a mean and the dense layers remain.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional

from dmn_localization.core import geometry
from dmn_localization.core.attention import EGO_CHANNELS, EgocentricSpatialAttention, QueryKey
from dmn_localization.core.configs import DMNConfig
from dmn_localization.core.encoders import (broadcast_channels, constant_input_weight, conv_part,
                                            ImageEncoder, pool_grid, spatial_mean)
from dmn_localization.core.pose_match import PoseMatch, wavelengths
from dmn_localization.core.position_attention import PositionAttention
import torch
from torch import nn, Tensor


@dataclass
class DMNMap:
    """
    A map prepared for reading; the per-map parts of the fast path are computed once.

    ``features`` ``(B, N, C, h, w)``, ``poses`` ``(B, N, 3)`` normalized,
    ``key_partials`` ``(B, N, C1)``, ``head_partials`` ``(B, N, C2 * h' * w')``,
    ``value_partials`` ``(B, N, D)`` (None without the egocentric value branch),
    ``match_partials`` ``(B, N, D)`` (None without the pose-match branch). With
    per-position attention ``key_partials`` is ``(B, N, C1, h, w)`` and ``head_partials``
    ``(B, N * 9, C2, h' * w')`` (one part per view and kernel offset).
    """

    features: Tensor
    poses: Tensor
    key_partials: Tensor
    head_partials: Tensor
    value_partials: Optional[Tensor] = None
    match_partials: Optional[Tensor] = None


@dataclass
class DMNQuery:
    """A query image prepared once per frame: features ``(B, C, h, w)`` and partials."""

    features: Tensor
    key: QueryKey
    head_partial: Tensor
    value_partial: Optional[Tensor] = None
    match_partial: Optional[Tensor] = None


class DMN(nn.Module):
    """DMN observation model (``dmn-pf``) and its regression variant (``dmn-regression``)."""

    def __init__(self, config: DMNConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.feature_channels
        self.view_encoder = ImageEncoder(3, config.encoder_widths, channels, config.feature_size)
        self.query_encoder = ImageEncoder(3, config.encoder_widths, channels,
                                          config.feature_size)
        if config.position_attention:
            if config.attention_prior:
                raise ValueError('attention_prior is for the per-view attention, not '
                                 'position_attention')
            self.attention = PositionAttention(channels, config.key_channels, config.key_dim)
        else:
            self.attention = EgocentricSpatialAttention(
                channels, config.key_channels, config.key_dim, config.attention_prior)
        self.head_conv = nn.Conv2d(2 * channels + EGO_CHANNELS, config.head_channels, 3)
        value_dim = config.ego_value_dim
        if value_dim and config.position_attention:
            raise ValueError('position_attention does not combine with the value branch')
        if value_dim:
            pooled = channels * math.prod(config.ego_value_grid)
            self.value_view = nn.Linear(pooled, value_dim)
            self.value_query = nn.Linear(pooled, value_dim, bias=False)
            self.value_ego = nn.Sequential(
                nn.Linear(EGO_CHANNELS, value_dim), nn.ReLU(inplace=True),
                nn.Linear(value_dim, value_dim, bias=False))
            if config.global_pose:
                self.value_pose = nn.Linear(EGO_CHANNELS, value_dim, bias=False)
            if config.global_heading:
                self.value_heading = nn.Linear(2, value_dim, bias=False)
        elif config.global_pose or config.global_heading:
            raise ValueError('global_pose and global_heading need the value branch '
                             '(ego_value_dim > 0)')
        if config.global_pose and config.global_heading:
            raise ValueError('global_pose already holds the heading; choose one')
        match_dim = config.pose_match_dim
        if match_dim and config.position_attention:
            raise ValueError('position_attention does not combine with the pose-match branch')
        self.pose_match = PoseMatch(channels, config.pose_match_grid, match_dim,
                                    wavelengths(config.pose_match_min_wavelength)) \
            if match_dim else None
        self.head_mlp = nn.Sequential(
            nn.Linear(config.head_channels + value_dim + int(config.match_score)
                      + (match_dim + 1 if match_dim else 0), config.head_hidden),
            nn.ReLU(inplace=True), nn.Linear(config.head_hidden, config.out_dim))

    def embed_views(self, images: Tensor, poses: Tensor) -> Tensor:
        """View embeddings ``(B, N, C, h, w)`` of context images ``(B, N, 3, H, W)``."""
        del poses  # DMN keeps poses beside the embeddings, not inside them
        return self.view_encoder(images)

    def prepare_map(self, embeddings: Tensor, poses: Tensor) -> DMNMap:
        """Precompute the per-map parts for embeddings ``(B, N, C, h, w)``, poses ``(B, N, 3)``."""
        channels = embeddings.shape[-3]
        if self.config.position_attention:
            head = self._position_head_partials(embeddings)
        else:
            head = conv_part(self.head_conv, embeddings, 0, channels,
                             bias=False).flatten(start_dim=-3)
        grid = self.config.ego_value_grid
        values = (self.value_view(pool_grid(embeddings, grid)) if self.config.ego_value_dim
                  else None)
        match = None if self.pose_match is None else self.pose_match.view_partials(embeddings)
        return DMNMap(embeddings, poses, self.attention.view_partials(embeddings), head, values,
                      match)

    def _position_head_partials(self, embeddings: Tensor) -> Tensor:
        """``W_d f_i`` for every view and kernel offset ``d``: ``(B, N * 9, C2, h' * w')``."""
        batch, views, channels, height, width = embeddings.shape
        kernel = self.head_conv.kernel_size
        offsets = kernel[0] * kernel[1]
        unfolded = nn.functional.unfold(embeddings.reshape(-1, channels, height, width),
                                        kernel).view(batch, views, channels, offsets, -1)
        weight = self.head_conv.weight[:, :channels].reshape(-1, channels, offsets)
        parts = torch.einsum('ocd,bncdp->bndop', weight, unfolded)
        return parts.reshape(batch, views * offsets, *parts.shape[-2:])

    def prepare_query(self, images: Tensor) -> DMNQuery:
        """Encode query images ``(B, 3, H, W)`` and precompute the per-frame parts."""
        features = self.query_encoder(images)
        channels = features.shape[-3]
        head = conv_part(self.head_conv, features, channels, 2 * channels, bias=True)
        grid = self.config.ego_value_grid
        values = self.value_query(pool_grid(features, grid)) if self.config.ego_value_dim else None
        match = None if self.pose_match is None else self.pose_match.query_partial(features)
        return DMNQuery(features, self.attention.query_key(features), head, values, match)

    def _values(self, map_: DMNMap, query: DMNQuery, weights: Tensor, ego: Tensor,
                particles: Tensor) -> Tensor:
        """Attended egocentric values ``(B, K, D)``: ``sum_i a_ki z_ki`` (see the module doc)."""
        assert map_.value_partials is not None and query.value_partial is not None
        per_particle = self.value_ego(ego)  # (B, K, N, D)
        if self.config.global_pose:
            per_particle = per_particle + self.value_pose(
                geometry.pose_features(particles))[:, :, None]
        if self.config.global_heading:  # (cos, sin) of the global pose features
            per_particle = per_particle + self.value_heading(
                geometry.pose_features(particles)[..., 2:])[:, :, None]
        z = torch.relu(map_.value_partials[:, None] + query.value_partial[:, None, None]
                       + per_particle)
        return (weights[..., None] * z).sum(dim=2)

    def observe(self, map_: DMNMap, query: DMNQuery, particles: Tensor,
                fast: bool = True) -> Tensor:
        """Observation model outputs ``(B, K, out_dim)`` for particles ``(B, K, 3)``."""
        ego = geometry.egocentric(particles, map_.poses)  # (B, K, N, 4)
        if fast:
            logits = self.attention.logits_fast(map_.key_partials, ego, query.key)
        else:
            logits = self.attention.logits_direct(map_.features, ego, query.key)
        # (B, K, N), or (B, K, N, h, w) with per-position attention: a softmax over views
        weights = torch.softmax(logits, dim=2)
        view_weights = weights.mean(dim=(-2, -1)) if weights.dim() == 5 else weights
        attended_ego = torch.einsum('bkn,bkne->bke', view_weights, ego)  # (B, K, 4)
        if not fast:
            hidden = self._head_direct(map_, query, weights, attended_ego)
        elif weights.dim() == 5:
            hidden = self._position_head_fast(map_, query, weights, attended_ego)
        else:
            hidden = self._head_fast(map_, query, weights, attended_ego)
        if self.config.ego_value_dim:
            hidden = torch.cat([hidden, self._values(map_, query, weights, ego, particles)], -1)
        if self.config.match_score:
            # how well the query matches the map's views as seen from the particle at all:
            # the softmax over views keeps only which view matches best, not how well
            score = torch.logsumexp(logits, dim=2)
            score = score.mean(dim=(-2, -1)) if score.dim() == 4 else score
            hidden = torch.cat([hidden, score[..., None]], -1)
        if self.pose_match is None:
            return self.head_mlp(hidden)
        if fast:
            assert map_.match_partials is not None and query.match_partial is not None
            match, attended = self.pose_match.forward_fast(map_.match_partials,
                                                           query.match_partial, ego)
        else:
            match, attended = self.pose_match.forward_direct(map_.features, query.features,
                                                             ego)
        out = self.head_mlp(torch.cat([hidden, match[..., None], attended], -1))
        # a log-likelihood: the match score enters directly as well (a pose offset does not)
        return out + match[..., None] if self.config.out_dim == 1 else out

    def _ego_part(self, attended_ego: Tensor) -> Tensor:
        """Apply the head convolution to the attended egocentric channels: ``(B, K, C2)``."""
        return attended_ego @ constant_input_weight(
            self.head_conv, self.head_conv.in_channels - EGO_CHANNELS).T

    def _head_fast(self, map_: DMNMap, query: DMNQuery, weights: Tensor,
                   attended_ego: Tensor) -> Tensor:
        # One batched matrix product gives the head's pre-activation for every particle:
        # [a_k, e_k] @ [[F_i + Q], [M]], where F_i = conv(f_i) (per map), Q = conv(query)
        # (per frame; the weights a_k sum to one, so adding Q to every F_i adds it once),
        # e_k the attended egocentric coordinates and M their constant-channel weights.
        batch, num_particles = weights.shape[:2]
        shape = query.head_partial.shape[-3:]
        ego_weight = constant_input_weight(self.head_conv,
                                           self.head_conv.in_channels - EGO_CHANNELS)
        ego_rows = ego_weight.T[:, :, None, None].expand(EGO_CHANNELS, *shape).flatten(1)
        rhs = torch.cat([map_.head_partials + query.head_partial.flatten(1)[:, None],
                         ego_rows.expand(batch, -1, -1)], dim=1)  # (B, N + 4, C2 h' w')
        lhs = torch.cat([weights, attended_ego], dim=-1)  # (B, K, N + 4)
        pre = torch.bmm(lhs, rhs).view(batch, num_particles, *shape)
        return spatial_mean(torch.relu(pre))

    def _position_head_fast(self, map_: DMNMap, query: DMNQuery, weights: Tensor,
                            attended_ego: Tensor) -> Tensor:
        # weights (B, K, N, h, w) unfolded over the head kernel: a_i(p + d) for every
        # output position p, view i and offset d, against the per-map parts W_d f_i(p + d)
        batch, num_particles, views, height, width = weights.shape
        unfolded = nn.functional.unfold(weights.reshape(-1, views, height, width),
                                        self.head_conv.kernel_size)
        unfolded = unfolded.view(batch, num_particles, *unfolded.shape[1:])  # (B, K, N*9, P)
        pre = (torch.einsum('bkjp,bjop->bkop', unfolded, map_.head_partials)
               + query.head_partial.flatten(2)[:, None]
               + self._ego_part(attended_ego)[..., None])
        return torch.relu(pre).mean(dim=-1)

    def _head_direct(self, map_: DMNMap, query: DMNQuery, weights: Tensor,
                     attended_ego: Tensor) -> Tensor:
        batch, num_particles = weights.shape[:2]
        height, width = map_.features.shape[-2:]
        if weights.dim() == 5:  # per-position weights
            attended = torch.einsum('bknyx,bncyx->bkcyx', weights, map_.features)
        else:
            attended = torch.einsum('bkn,bnchw->bkchw', weights, map_.features)
        query_features = query.features[:, None].expand_as(attended)
        x = torch.cat([attended, query_features,
                       broadcast_channels(attended_ego, height, width)], dim=-3)
        out = torch.relu(self.head_conv(x.reshape(-1, *x.shape[-3:])))
        return spatial_mean(out).view(batch, num_particles, -1)
