"""
The paper's unstructured map baselines (its section C.2), behind DMN's interface.

* Latent image map (``image-pf``, ``image-regression``): each context image is encoded
  with its *global* pose concatenated as input channels, and the map is the mean of
  the context features over contexts: a grid of latent vectors, with no attention.
  The candidate pose enters the query feature extraction as constant input channels
  of the first layer that sees the query features.
* Latent vector map (``vector-pf``, ``vector-regression``): the same with a
  convolutional-dense encoder to a flat vector, and a dense head.

Each keeps per-view embeddings (so a map can be extended with more views, like DMN's)
and averages them when the map is prepared. Both have a direct and a fast computation
of the same function: the first layer of the head is split into a per-map, a per-frame
and a per-particle part (the pose channels are constant over space).
"""

from __future__ import annotations

from dataclasses import dataclass

from dmn_localization.core import geometry
from dmn_localization.core.configs import ImageMapConfig, VectorMapConfig
from dmn_localization.core.encoders import (broadcast_channels, constant_input_weight, conv_part,
                                            ImageEncoder, spatial_mean)
import torch
from torch import nn, Tensor

POSE_CHANNELS = 4  # (x, y, cos yaw, sin yaw) in the global normalized frame


def _with_pose_channels(images: Tensor, poses: Tensor) -> Tensor:
    """Concatenate images ``(B, N, 3, H, W)`` with pose channels: ``(B, N, 7, H, W)``."""
    height, width = images.shape[-2:]
    return torch.cat([images, broadcast_channels(geometry.pose_features(poses), height,
                                                 width)], dim=-3)


@dataclass
class LatentMap:
    """A prepared latent map: ``features`` (the mean), ``poses`` ``(B, N, 3)``, ``partial``."""

    features: Tensor
    poses: Tensor
    partial: Tensor


@dataclass
class LatentQuery:
    """A prepared query: ``features`` and the per-frame part of the head's first layer."""

    features: Tensor
    partial: Tensor


class LatentImageMap(nn.Module):
    """Latent image map observation model: mean context feature grid, no attention."""

    def __init__(self, config: ImageMapConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.feature_channels
        self.view_encoder = ImageEncoder(3 + POSE_CHANNELS, config.encoder_widths, channels,
                                         config.feature_size)
        self.query_encoder = ImageEncoder(3, config.encoder_widths, channels,
                                          config.feature_size)
        self.head_conv = nn.Conv2d(2 * channels + POSE_CHANNELS, config.head_channels, 3)
        self.head_mlp = nn.Sequential(
            nn.Linear(config.head_channels, config.head_hidden), nn.ReLU(inplace=True),
            nn.Linear(config.head_hidden, config.out_dim))

    def embed_views(self, images: Tensor, poses: Tensor) -> Tensor:
        """Per-view features ``(B, N, C, h, w)`` of images with their global poses."""
        return self.view_encoder(_with_pose_channels(images, poses))

    def prepare_map(self, embeddings: Tensor, poses: Tensor) -> LatentMap:
        """Average the views into the latent image ``(B, C, h, w)``; precompute its part."""
        features = embeddings.mean(dim=1)
        partial = conv_part(self.head_conv, features, 0, features.shape[-3], bias=False)
        return LatentMap(features, poses, partial)

    def prepare_query(self, images: Tensor) -> LatentQuery:
        """Encode query images ``(B, 3, H, W)``; precompute their part of the head."""
        features = self.query_encoder(images)
        channels = features.shape[-3]
        return LatentQuery(features, conv_part(self.head_conv, features, channels,
                                               2 * channels, bias=True))

    def observe(self, map_: LatentMap, query: LatentQuery, particles: Tensor,
                fast: bool = True) -> Tensor:
        """Observation model outputs ``(B, K, out_dim)`` for particles ``(B, K, 3)``."""
        pose = geometry.pose_features(particles)  # (B, K, 4)
        if fast:
            weight = constant_input_weight(self.head_conv,
                                           self.head_conv.in_channels - POSE_CHANNELS)
            pre = ((map_.partial + query.partial)[:, None]
                   + (pose @ weight.T)[..., None, None])
            hidden = spatial_mean(torch.relu(pre))
        else:
            batch, num_particles = particles.shape[:2]
            height, width = map_.features.shape[-2:]
            shape = (batch, num_particles, *map_.features.shape[1:])
            x = torch.cat([map_.features[:, None].expand(shape),
                           query.features[:, None].expand(shape),
                           broadcast_channels(pose, height, width)], dim=-3)
            out = torch.relu(self.head_conv(x.reshape(-1, *x.shape[-3:])))
            hidden = spatial_mean(out).view(batch, num_particles, -1)
        return self.head_mlp(hidden)


class VectorEncoder(nn.Module):
    """Convolutional-dense encoder: the image CNN, flattened, then a dense layer."""

    def __init__(self, in_channels: int, config: VectorMapConfig) -> None:
        super().__init__()
        height, width = config.feature_size
        self.cnn = ImageEncoder(in_channels, config.encoder_widths, config.feature_channels,
                                config.feature_size)
        self.fc = nn.Linear(config.feature_channels * height * width, config.vector_dim)

    def forward(self, images: Tensor) -> Tensor:
        """Encode ``(..., in_channels, H, W)`` into vectors ``(..., vector_dim)``."""
        return self.fc(self.cnn(images).flatten(start_dim=-3))


class LatentVectorMap(nn.Module):
    """Latent vector map observation model: mean context vector and a dense head."""

    def __init__(self, config: VectorMapConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.vector_dim
        self.view_encoder = VectorEncoder(3 + POSE_CHANNELS, config)
        self.query_encoder = VectorEncoder(3, config)
        self.head_in = nn.Linear(2 * dim + POSE_CHANNELS, config.head_hidden)
        self.head_mlp = nn.Sequential(
            nn.ReLU(inplace=True), nn.Linear(config.head_hidden, config.head_hidden),
            nn.ReLU(inplace=True), nn.Linear(config.head_hidden, config.out_dim))

    def embed_views(self, images: Tensor, poses: Tensor) -> Tensor:
        """Per-view vectors ``(B, N, D)`` of images with their global poses."""
        return self.view_encoder(_with_pose_channels(images, poses))

    def prepare_map(self, embeddings: Tensor, poses: Tensor) -> LatentMap:
        """Average the views into the latent vector ``(B, D)``; precompute its part."""
        features = embeddings.mean(dim=1)
        dim = features.shape[-1]
        return LatentMap(features, poses, features @ self.head_in.weight[:, :dim].T)

    def prepare_query(self, images: Tensor) -> LatentQuery:
        """Encode query images ``(B, 3, H, W)``; precompute their part of the head."""
        features = self.query_encoder(images)
        dim = features.shape[-1]
        partial = features @ self.head_in.weight[:, dim:2 * dim].T + self.head_in.bias
        return LatentQuery(features, partial)

    def observe(self, map_: LatentMap, query: LatentQuery, particles: Tensor,
                fast: bool = True) -> Tensor:
        """Observation model outputs ``(B, K, out_dim)`` for particles ``(B, K, 3)``."""
        pose = geometry.pose_features(particles)
        if fast:
            start = self.head_in.in_features - POSE_CHANNELS
            pre = ((map_.partial + query.partial)[:, None]
                   + pose @ self.head_in.weight[:, start:].T)
        else:
            shape = (*particles.shape[:2], map_.features.shape[-1])
            x = torch.cat([map_.features[:, None].expand(shape),
                           query.features[:, None].expand(shape), pose], dim=-1)
            pre = self.head_in(x)
        return self.head_mlp(pre)
