"""Reading audio inputs for training, validation and transcription.

:class:`AudioReader` has the interface of :class:`heedful.vision.data.ImageReader`: ``read``
(a WAV path or an array of samples -> features), ``size`` (memory slots, what batching
counts), ``collate`` and ``batch``, and ``array`` (the training inputs for the batch
stream), so the trainer, validation and the transcriber read either source the same way.
SpecAugment (:class:`SpecAugmenter`) masks training features on the batch-assembling thread,
a pure function of the batch's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from heedful.audio.encoder import subsampled_lengths
from heedful.audio.features import AudioConfig, LogMel, read_wav, resample
from heedful.batching import SourceArray
from heedful.data import Batch, make_batch
from heedful.errors import DataError


def slots_of(frames: int) -> int:
    """Memory slots of an utterance of ``frames`` feature frames."""
    return int(subsampled_lengths(torch.tensor(frames)))


def collate_features(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterances (T_i, F) float -> the batch (B, T_max, F) float32, zero-padded at the end,
    and the frame mask (B, T_max) bool. NumPy only until the end: this runs on the
    batch-assembling thread too."""
    longest = max(f.shape[0] for f in features)
    batch = np.zeros((len(features), longest, features[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(features), longest), dtype=bool)
    for row, f in enumerate(features):
        batch[row, : f.shape[0]] = f
        mask[row, : f.shape[0]] = True
    return torch.from_numpy(batch), torch.from_numpy(mask)


class AudioReader:
    """Reads audio inputs — WAV paths, or 1-D sample arrays at the run's rate from the Python
    API — into normalised log-mel features (T, n_mels), and pads them into batches."""

    def __init__(self, cfg: AudioConfig) -> None:
        self.cfg = cfg
        self.features = LogMel(cfg)
        self.hop_seconds = cfg.hop / cfg.sample_rate

    def read(self, item: str | Path | np.ndarray, where: str | None = None) -> np.ndarray:
        if isinstance(item, np.ndarray):
            if item.ndim != 1 or item.size == 0:
                raise DataError(f"{where or 'array'}: expected a non-empty 1-D array of "
                                f"samples at {self.cfg.sample_rate} Hz, got shape "
                                f"{tuple(item.shape)}")
            return self.features(item.astype(np.float32))
        samples, rate = read_wav(item, where)
        return self.features(resample(samples, rate, self.cfg.sample_rate, where or str(item)))

    def size(self, features: np.ndarray) -> int:
        return slots_of(features.shape[0])

    def collate(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_features(features)

    def array(self, features: list[np.ndarray]) -> SourceArray:
        """The utterances as the batch stream's training inputs (kept as float16: half the
        memory; features are normalised, so nothing is lost that a model notices). Batches
        are planned on each utterance's longest form: speed perturbation can stretch it to
        ``1 / (1 - speed_perturb)`` of its frames, and a batch must stay in its budget."""
        stretch = 1 / (1 - self.cfg.speed_perturb)
        sizes = np.fromiter((slots_of(int(np.ceil(f.shape[0] * stretch))) for f in features),
                            dtype=np.int64, count=len(features))
        return SourceArray([f.astype(np.float16) for f in features], sizes, collate_features)

    def batch(self, features: Sequence[np.ndarray], targets: Sequence[Sequence[int]],
              pad_id: int, bos_id: int, eos_id: int) -> Batch:
        """A training/validation batch of utterances and their target ids."""
        text = make_batch([[eos_id]] * len(targets), targets, pad_id, bos_id, eos_id)
        src, mask = self.collate(features)
        return Batch(src, mask, text.tgt_in, text.tgt_out, text.tgt_mask, text.num_tgt_tokens)


def warp_axis(features: np.ndarray, factor: float, axis: int, keep_length: bool
              ) -> np.ndarray:
    """``features`` (T, F) resampled along ``axis`` by linear interpolation: position ``i`` of
    the result reads position ``i * factor`` of the input. ``keep_length``: the result keeps
    the axis's length (edges clamp; a warped mel axis); otherwise it becomes
    ``round(n / factor)`` long (a stretched or squeezed time axis)."""
    n = features.shape[axis]
    m = n if keep_length else max(1, round(n / factor))
    where = np.minimum(np.arange(m) * factor, n - 1)
    low = np.floor(where).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    frac = (where - low).astype(np.float32)
    shape = [1, 1]
    shape[axis] = m
    frac = frac.reshape(shape)
    a, b = np.take(features, low, axis=axis), np.take(features, high, axis=axis)
    return (a * (1 - frac) + b * frac).astype(np.float32)


class SpecAugmenter:
    """SpecAugment's masking (Park et al. 2019) of a batch's features: ``(features, seed) ->
    features``, each utterance masked from its own stream of the seed; masked cells become 0,
    the normalised features' mean. Before the masks, optional speed perturbation (a time
    stretch, ``speed_perturb``) and vocal tract length perturbation (a mel-axis warp,
    ``vtlp``): voices the training speakers do not have, which is what a held-out speaker
    needs."""

    def __init__(self, cfg: AudioConfig) -> None:
        self.cfg = cfg

    def __call__(self, features: list[np.ndarray], seed: int) -> list[np.ndarray]:
        cfg, out = self.cfg, []
        for f, stream in zip(features, np.random.SeedSequence(seed).spawn(len(features)),
                             strict=True):
            rng, f = np.random.default_rng(stream), f.astype(np.float32)
            if cfg.speed_perturb:
                speed = 1 + float(rng.uniform(-cfg.speed_perturb, cfg.speed_perturb))
                f = warp_axis(f, speed, axis=0, keep_length=False)
            if cfg.vtlp:
                f = warp_axis(f, 1 + float(rng.uniform(-cfg.vtlp, cfg.vtlp)), axis=1,
                              keep_length=True)
            f = f.copy()
            frames, bands = f.shape
            widest = min(cfg.time_mask_frames, frames // 5)
            for _ in range(cfg.time_masks):
                width = int(rng.integers(0, widest + 1))
                start = int(rng.integers(0, frames - width + 1))
                f[start:start + width] = 0
            for _ in range(cfg.freq_masks):
                width = int(rng.integers(0, min(cfg.freq_mask_bands, bands) + 1))
                start = int(rng.integers(0, bands - width + 1))
                f[:, start:start + width] = 0
            out.append(f)
        return out

    @staticmethod
    def wanted(cfg: AudioConfig) -> bool:
        return (cfg.time_masks > 0 or cfg.freq_masks > 0 or cfg.speed_perturb > 0
                or cfg.vtlp > 0)
