"""Convolutional image encoder shared by DMN and its baselines."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn, Tensor


class ImageEncoder(nn.Module):
    """
    CNN from images ``(B, in_channels, H, W)`` to feature maps ``(B, C, h, w)``.

    Two stride-2 stages take a 32x32 image to 8x8; an adaptive average pool fixes the
    output at ``feature_size`` for any input size (e.g. 104x208 panoramas), so the
    cost of everything downstream does not grow with the camera resolution.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], out_channels: int,
                 feature_size: Tuple[int, int]) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, out_channels, 3, padding=1),
            nn.AdaptiveAvgPool2d(tuple(feature_size)),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Encode ``(..., in_channels, H, W)`` into ``(..., C, h, w)``."""
        lead = images.shape[:-3]
        out = self.net(images.reshape(-1, *images.shape[-3:]))
        return out.reshape(*lead, *out.shape[1:])


def broadcast_channels(values: Tensor, height: int, width: int) -> Tensor:
    """Turn ``(..., D)`` into constant feature maps ``(..., D, height, width)``."""
    return values[..., None, None].expand(*values.shape, height, width)


def constant_input_weight(conv: nn.Conv2d, start: int) -> Tensor:
    """
    Matrix ``(out, in - start)`` equal to ``conv`` applied to constant input channels.

    For an unpadded ("valid") convolution every output position sees the whole kernel,
    so input channels ``start:`` that are constant over space contribute exactly
    ``weight[:, start:].sum((2, 3)) @ value`` at every position.
    """
    if conv.padding not in (0, (0, 0), 'valid'):
        raise ValueError('the constant-channel factoring needs an unpadded convolution')
    return conv.weight[:, start:].sum(dim=(2, 3))


def conv_part(conv: nn.Conv2d, x: Tensor, start: int, stop: int, bias: bool) -> Tensor:
    """Apply the input channels ``start:stop`` of ``conv`` to ``x`` ``(..., stop-start, h, w)``."""
    lead = x.shape[:-3]
    out = nn.functional.conv2d(x.reshape(-1, *x.shape[-3:]), conv.weight[:, start:stop],
                               conv.bias if bias else None, conv.stride, conv.padding)
    return out.reshape(*lead, *out.shape[1:])


def spatial_mean(x: Tensor) -> Tensor:
    """Average ``(..., C, h, w)`` over its two spatial dimensions: ``(..., C)``."""
    return torch.mean(x, dim=(-2, -1))


def pool_grid(features: Tensor, grid: Sequence[int]) -> Tensor:
    """Average-pool ``(..., C, h, w)`` to ``grid`` and flatten: ``(..., C * cells)``."""
    lead = features.shape[:-3]
    pooled = nn.functional.adaptive_avg_pool2d(features.reshape(-1, *features.shape[-3:]),
                                               tuple(grid))
    return pooled.reshape(*lead, -1)
