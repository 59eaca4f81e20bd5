"""Dropout with cheap random masks on the CPU.

Why: PyTorch's CPU dropout draws its mask with ``bernoulli_``, about 11 ns per element on this
project's machine — a 4,096 x 1,024 activation costs ~50 ms, more than the 4,096 x 1,024 x 256
matmul that produced it. In the Transformer benchmark (``heedful bench``) ``bernoulli_`` was
15.7% of a training step (docs/profile_train.transformer.txt).

Here one ``random_()`` call fills int64 words and each word is read as four independent
16-bit integers; an element is kept when its integer is at or above p * 65536 (shifted to the
signed range). Same distribution as ``F.dropout`` up to p's resolution of 1/65,536, drawn from
torch's default generator (``torch.manual_seed`` reproduces it), about 3x faster forward and
backward. On other devices (CUDA has a fused dropout kernel) it defers to ``F.dropout``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 - p (independent)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), (1 << 63) - 1)  # the whole int64 range: 4 uniform int16 each
    threshold = round(p * _LEVELS) - _LEVELS // 2
    return (words.view(torch.int16)[:n] >= threshold).view(shape)


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """A float32 tensor of ``shape``: 1 / (1 - p) where :func:`keep_mask` (the same draws)
    keeps an element, 0 where it drops it."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), (1 << 63) - 1)
    threshold = round(p * _LEVELS) - _LEVELS // 2
    kept = torch.tensor(1.0 / (1.0 - p), device=device)
    return torch.where(words.view(torch.int16)[:n] >= threshold, kept,
                       torch.zeros((), device=device)).view(shape)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with :func:`keep_mask` on the CPU.

    float32: one product with the scaled mask of :func:`keep_scale` (forward and backward one
    pass each; a bool mask costs a conversion and a second product each way: 17.6 -> 14.2 ms
    for a 4,095 x 1,024 forward + backward at 2 threads). Lower precisions keep the bool mask,
    so the scale is not rounded to their precision first. Both draw the same mask."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    if x.dtype == torch.float32:
        return x * keep_scale(x.shape, p, x.device)
    return (x * keep_mask(x.shape, p, x.device)).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """Drop-in for :class:`torch.nn.Dropout` (same ``p``, same state dict: none)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
