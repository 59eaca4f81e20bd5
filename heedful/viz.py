"""Attention heatmaps (matplotlib is imported lazily, inside the functions that draw)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_attention(weights: np.ndarray, src_labels: Sequence[str], tgt_labels: Sequence[str],
                   path: str | Path, title: str | None = None) -> Path:
    """Save a heatmap of weights (T_out, S): source subwords on x, generated subwords on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(tgt_labels), len(src_labels)):
        raise ValueError(f"weights {weights.shape} do not match labels "
                         f"({len(tgt_labels)} target x {len(src_labels)} source)")
    width = min(4 + 0.32 * len(src_labels), 40)
    height = min(3 + 0.3 * len(tgt_labels), 40)
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0,
                      vmax=max(float(weights.max()), 1e-6), interpolation="nearest")
    ax.set_xticks(range(len(src_labels)))
    ax.set_xticklabels(src_labels, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(tgt_labels)))
    ax.set_yticklabels(tgt_labels, fontsize=9)
    ax.set_xlabel("source subwords")
    ax.set_ylabel("generated subwords")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
