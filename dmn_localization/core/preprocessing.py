"""Camera images to model input: resize to the model's size and scale pixels."""

from __future__ import annotations

from typing import Union

from dmn_localization.core.configs import InputConfig
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional


def preprocess_images(images: Union[np.ndarray, Tensor], config: InputConfig,
                      device: Union[str, torch.device, None] = None) -> Tensor:
    """
    Turn RGB images ``(..., H, W, 3)`` uint8 into model input ``(..., 3, h, w)`` float.

    ``(h, w)`` is ``config.image_size``; images of another size are resized with area
    averaging (anti-aliased when shrinking). Pixels become
    ``(value / 255 - pixel_mean) / pixel_std``.
    """
    x = torch.as_tensor(images if isinstance(images, Tensor) else np.asarray(images),
                        device=device)
    if x.shape[-1] != 3 or x.ndim < 3:
        raise ValueError(f'expected RGB images (..., H, W, 3), got shape {tuple(x.shape)}')
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    size = tuple(config.image_size)
    if tuple(x.shape[-2:]) != size:
        shrinking = x.shape[-2] >= size[0] and x.shape[-1] >= size[1]
        x = functional.interpolate(x, size=size, mode='area' if shrinking else 'bilinear',
                                   **({} if shrinking else {'align_corners': False}))
    x = (x - config.pixel_mean) / config.pixel_std
    return x.reshape(*lead, 3, *size)
