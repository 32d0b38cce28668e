"""The one place that turns a device setting (auto, cpu, cuda) into a torch device."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ('auto', 'cpu', 'cuda')


def resolve_device(requested: str) -> torch.device:
    """Return CUDA for ``auto`` when available, else the CPU; refuse ``cuda`` without one."""
    if requested == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if requested not in DEVICE_CHOICES:
        raise ValueError(f'device must be one of {", ".join(DEVICE_CHOICES)}, got {requested!r}')
    if requested == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but torch sees no CUDA device')
    return torch.device(requested)
