"""Audio as model inputs: reading WAV files and computing log-mel filterbank features.

Every recording becomes one ``(T, n_mels)`` float32 array:

1. read with ``soundfile`` (WAV only: the container and the sample format are checked, so a
   file in another format is refused by name rather than decoded as noise), mixed down to
   mono;
2. resampled to the run's rate (``data.audio.sample_rate``) with ``soxr``;
3. framed by :func:`torch.stft` (a Hann window of ``window_ms``, a hop of ``hop_ms``, frames
   centred on their hop, the signal padded with zeros at both ends), the power spectrum
   multiplied by a Slaney-style mel filterbank (:func:`mel_filterbank`, the same matrix as
   ``librosa.filters.mel``'s default), and ``log(x + 1e-6)``;
4. normalised per utterance: every mel band to mean 0 and variance 1 over the utterance's
   frames, so the model does not see the recording's loudness or microphone.

``torchaudio`` has no build for the torch this project pins, hence ``torch.stft`` and the
filterbank here; ``tests/test_audio.py`` checks both against librosa on known signals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from heedful.errors import DataError

# soundfile subtypes read as numbers; anything else (ADPCM, mu-law, ...) is refused by name
_PCM_SUBTYPES = {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}
MAX_SECONDS = 600.0
"""The longest recording a model reads; longer ones are refused by name rather than
exhausting memory."""


class AudioConfig(BaseModel):
    """``data.audio``: how recordings become features (``data.source: audio``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    sample_rate: int = Field(16_000, ge=4_000, le=48_000)
    """Every recording is resampled to this rate (Hz)."""
    n_mels: int = Field(80, ge=8, le=256)
    """Mel bands per frame."""
    window_ms: float = Field(25.0, gt=0, le=100)
    """The analysis window (Hann), milliseconds."""
    hop_ms: float = Field(10.0, gt=0, le=100)
    """The hop between frames, milliseconds."""
    time_masks: int = Field(0, ge=0)
    """SpecAugment (training only): this many masks of up to ``time_mask_frames`` frames."""
    time_mask_frames: int = Field(20, ge=1)
    """The widest time mask, frames (never more than a fifth of the utterance)."""
    freq_masks: int = Field(0, ge=0)
    """SpecAugment (training only): this many masks of up to ``freq_mask_bands`` bands."""
    freq_mask_bands: int = Field(8, ge=1)
    """The widest frequency mask, mel bands."""
    speed_perturb: float = Field(0.0, ge=0, le=0.3)
    """Training only: every utterance's frames stretched or squeezed in time by a factor
    drawn from [1 - x, 1 + x] (speed perturbation, Ko et al. 2015, on the features)."""
    vtlp: float = Field(0.0, ge=0, le=0.3)
    """Training only: every utterance's mel axis warped by a factor drawn from [1 - x, 1 + x]
    (vocal tract length perturbation, Jaitly & Hinton 2013): another speaker's voice."""

    @property
    def n_fft(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)


def read_wav(path: str | Path | IO[bytes], where: str | None = None
             ) -> tuple[np.ndarray, int]:
    """The samples (N,) float32 in [-1, 1], mixed to mono, and the file's rate. Errors name
    ``where`` (e.g. ``train.tsv, line 7: a.wav``) or the path."""
    import soundfile as sf

    origin = where or str(path)
    if isinstance(path, str | Path):
        p = Path(path)
        if not p.exists():
            raise DataError(f"{origin}: file not found")
        if p.is_dir():
            raise DataError(f"{origin}: is a directory, not a file")
    try:
        with sf.SoundFile(path) as f:
            if f.format != "WAV":
                raise DataError(f"{origin}: not a WAV file ({f.format_info}); convert it to "
                                "WAV (e.g. ffmpeg -i in -ac 1 out.wav)")
            if f.subtype not in _PCM_SUBTYPES:
                raise DataError(f"{origin}: WAV sample format {f.subtype} ({f.subtype_info}) "
                                "is not read; use PCM or float samples")
            rate = f.samplerate
            if f.frames / rate > MAX_SECONDS:
                raise DataError(f"{origin}: {f.frames / rate:.0f} s long, longer than the "
                                f"{MAX_SECONDS:.0f} s a model reads (split it)")
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise DataError(f"{origin}: not a readable WAV file ({err})") from None
    if samples.shape[0] == 0:
        raise DataError(f"{origin}: the recording is empty (0 samples)")
    return samples.mean(axis=1).astype(np.float32), rate


def resample(samples: np.ndarray, rate: int, target: int, where: str | None = None
             ) -> np.ndarray:
    """``samples`` at ``rate`` Hz -> at ``target`` Hz (soxr, high quality). A recording too
    short to leave one sample at ``target`` is refused, naming ``where``."""
    if rate == target:
        return samples
    import soxr

    out = soxr.resample(samples, rate, target).astype(np.float32)
    if out.size == 0:
        raise DataError(f"{where or 'recording'}: too short ({samples.size} samples at "
                        f"{rate} Hz leave none at {target} Hz)")
    return out


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    mel[log_region] = min_log_hz / f_sp + np.log(hz[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    hz = f_sp * mel
    log_region = mel >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on Slaney's mel scale,
    each normalised to unit area (librosa's ``filters.mel`` with its defaults)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0],
                                   _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel:
    """Samples at ``cfg.sample_rate`` -> normalised log-mel features (T, n_mels) float32,
    T = 1 + N // hop (frames centred on every hop)."""

    def __init__(self, cfg: AudioConfig) -> None:
        self.cfg = cfg
        self.window = torch.hann_window(cfg.n_fft, periodic=True)
        # (n_fft // 2 + 1, n_mels), so the product is (T, n_mels)
        self.mel = torch.from_numpy(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)).T

    def power_mel(self, samples: np.ndarray) -> torch.Tensor:
        """(T, n_mels) mel-band power, before the log and normalisation."""
        signal = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        spec = torch.stft(signal, self.cfg.n_fft, self.cfg.hop, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        return spec.abs().pow(2).T @ self.mel

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            feats = torch.log(self.power_mel(samples) + 1e-6)
            feats = (feats - feats.mean(0)) / (feats.std(0, unbiased=False) + 1e-5)
        return feats.numpy()


def read_features(path: str | Path | IO[bytes], cfg: AudioConfig,
                  where: str | None = None) -> np.ndarray:
    """A WAV file -> its (T, n_mels) features at the run's rate."""
    samples, rate = read_wav(path, where)
    return LogMel(cfg)(resample(samples, rate, cfg.sample_rate, where or str(path)))


def frames_to_seconds(frames: int, cfg: AudioConfig) -> float:
    return frames * cfg.hop / cfg.sample_rate


def spectrogram_picture(features: np.ndarray) -> np.ndarray:
    """Normalised log-mel features (T, bands) as a grayscale picture (bands, T) uint8: a
    column per frame, low bands at the bottom, dark where loud (ink on paper, like the image
    models' inputs), for pages that light attention's frames on it."""
    shade = 255 - np.clip((np.asarray(features, dtype=np.float32) + 2.5) * 51, 0, 255)
    return np.ascontiguousarray(shade.T[::-1]).astype(np.uint8)
