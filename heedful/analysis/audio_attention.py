"""Attention drawn on the spectrogram: where in the recording each output character listened.

The audio encoder's memory slots are 40 ms stretches of the recording, each with its time
span (:attr:`heedful.decoding.transcriber.Transcription.spans`). :func:`plot_audio_attention`
draws the log-mel spectrogram and, under it on the same time axis, every output step's
attention spread over the spans of the slots it weighs: a speech model that has learned to
listen draws a monotonic path from the top left to the bottom right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from heedful.analysis.plots import pyplot, save_figure


def plot_audio_attention(features: np.ndarray, weights: np.ndarray, spans: np.ndarray,
                         hop_seconds: float, tgt_labels: Sequence[str], path: str | Path,
                         title: str | None = None) -> Path:
    """Save the spectrogram (features (frames, bands)) above the attention (weights (T, S)
    over slots with spans (S, 2) in seconds), one row per output piece."""
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(tgt_labels), len(spans)):
        raise ValueError(f"weights {weights.shape} do not match {len(tgt_labels)} outputs x "
                         f"{len(spans)} slots")
    plt = pyplot()
    seconds = features.shape[0] * hop_seconds
    steps = len(tgt_labels)
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(min(max(seconds * 3, 6), 16), 3 + 0.25 * steps), dpi=100,
        gridspec_kw={"height_ratios": [1, max(1.0, steps / 8)]})
    top.imshow(features.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, seconds, 0, features.shape[1]))
    top.set_ylabel("mel band")
    # each slot's weight over its own stretch of time: (T, S) -> a picture on the time axis
    bottom.imshow(weights, aspect="auto", cmap="Greys", interpolation="nearest",
                  extent=(float(spans[0, 0]), float(spans[-1, 1]), steps - 0.5, -0.5),
                  vmin=0.0, vmax=max(float(weights.max()), 1e-6))
    bottom.set_yticks(range(steps))
    bottom.set_yticklabels([label.replace("▁", "␣") for label in tgt_labels])
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("output")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
