"""Batch augmentation and normalisation on tensors: pad-4 random crop and horizontal flip, vectorised."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_crop_flip(n: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets ``(n, 2)`` in ``[0, 2*pad]`` and flip flags ``(n,)`` for a batch."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad``, crop back to the original size at ``offsets`` and mirror where ``flips``."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 NCHW to float: ``(x / 255 - mean) / std``; ``mean``/``std`` broadcast (per channel or pixel)."""
    x = images.float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
