"""The audio encoder: convolutional subsampling of log-mel frames into attention memory.

As in Listen, Attend and Spell (Chan et al. 2016) and fairseq's speech_to_text, the frames
(10 ms apart) are far more than a decoder needs to attend over, so two stride-2 convolutions
first cut them 4x::

    (B, T, F) features ──conv3x3 stride 2·ReLU──► (B, C, T/2, F/2)
                        ──conv3x3 stride 2·ReLU──► (B, C, T/4, F/4)
                        ──linear C·F/4 -> D, + sinusoidal time position──► (B, S, D)

with S = ceil(ceil(T / 2) / 2) memory slots, each covering 40 ms of audio. The padding mask
is recomputed from every utterance's own length through the same arithmetic, and the
positions past an utterance's end are zeroed after each convolution, so an utterance encodes
the same alone and inside a padded batch. The wrapped architecture's own encoder (a
bidirectional RNN or Transformer layers, :class:`heedful.vision.model.ImageToText`) then
reads the slots.

Every slot keeps its time span (:meth:`AudioEncoder.slot_spans`), so attention can be drawn
on the spectrogram.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from heedful.nn.transformer import sinusoidal_positions

SUBSAMPLING = 4
"""Frames per memory slot."""


def subsampled_lengths(lengths: Tensor) -> Tensor:
    """Frames -> memory slots: two convolutions of kernel 3, stride 2, padding 1."""
    for _ in range(2):
        lengths = (lengths - 1) // 2 + 1
    return lengths


class AudioEncoder(nn.Module):
    """(B, T, F) features + frame mask (B, T) -> memory (B, S, D) and slot mask (B, S).

    ``n_mels``: F; ``out_dim``: D (the text model's embedding size); ``channels``: C."""

    def __init__(self, n_mels: int, out_dim: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.n_mels, self.out_dim = n_mels, out_dim
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        bands = (n_mels - 1) // 2 + 1
        bands = (bands - 1) // 2 + 1
        self.project = nn.Linear(channels * bands, out_dim)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _keep(x: Tensor, lengths: Tensor) -> Tensor:
        """x (B, C, T', F') with the frames at or past each utterance's length zeroed."""
        keep = torch.arange(x.size(2), device=x.device)[None, :] < lengths[:, None]
        return x * keep[:, None, :, None].to(x.dtype)

    def forward(self, features: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, F) float, frame_mask (B, T) bool -> memory (B, S, D), slot mask
        (B, S) bool."""
        if features.size(-1) != self.n_mels:
            raise ValueError(f"features have {features.size(-1)} mel bands; this model reads "
                             f"{self.n_mels}")
        dtype = self.project.weight.dtype
        lengths = frame_mask.sum(1)
        x = self._keep(features.to(dtype).unsqueeze(1), lengths)
        lengths = (lengths - 1) // 2 + 1
        x = self._keep(torch.relu(self.conv1(x)), lengths)
        lengths = (lengths - 1) // 2 + 1
        x = self._keep(torch.relu(self.conv2(x)), lengths)
        b, c, slots, bands = x.shape
        feats = self.project(x.permute(0, 2, 1, 3).reshape(b, slots, c * bands))
        feats = feats + sinusoidal_positions(slots, self.out_dim).to(x.device, dtype)[None]
        slot_mask = torch.arange(slots, device=x.device)[None, :] < lengths[:, None]
        return self.dropout(feats * slot_mask[..., None].to(dtype)), slot_mask

    @staticmethod
    def slot_spans_of(frames: int, hop_seconds: float) -> np.ndarray:
        """The time span (start, end) in seconds of every memory slot of an utterance of
        ``frames`` frames: (S, 2) float."""
        slots = int(subsampled_lengths(torch.tensor(frames)))
        starts = np.arange(slots) * SUBSAMPLING * hop_seconds
        return np.stack([starts, np.minimum(starts + SUBSAMPLING * hop_seconds,
                                            frames * hop_seconds)], axis=1)

    @staticmethod
    def slot_boxes_of(frames: int, bands: int) -> np.ndarray:
        """Every memory slot's box (x0, y0, x1, y1) on the spectrogram picture of
        :func:`heedful.audio.features.spectrogram_picture` (a column per frame, a row per
        band): the frames it covers, every band. (S, 4) int."""
        slots = int(subsampled_lengths(torch.tensor(frames)))
        starts = np.arange(slots) * SUBSAMPLING
        return np.stack([starts, np.zeros_like(starts), np.minimum(starts + SUBSAMPLING, frames),
                         np.full_like(starts, bands)], axis=1).astype(np.int64)
