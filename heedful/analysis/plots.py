"""Attention heatmaps (matplotlib is imported lazily, inside the functions that draw)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def plot_attention(weights: np.ndarray, src_labels: Sequence[str], tgt_labels: Sequence[str],
                   path: str | Path, title: str | None = None) -> Path:
    """Save a heatmap of weights (T_out, S): source subwords on x, generated subwords on y."""
    return save_figure(attention_figure(weights, src_labels, tgt_labels, title), path)


def attention_figure(weights: np.ndarray, src_labels: Sequence[str], tgt_labels: Sequence[str],
                     title: str | None = None) -> Any:
    """The matplotlib figure of :func:`plot_attention` (the caller saves and closes it)."""
    plt = pyplot()
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
    return fig


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def plot_attention_grid(weights: np.ndarray, src_labels: Sequence[str],
                        tgt_labels: Sequence[str], path: str | Path,
                        title: str | None = None) -> Path:
    """Save every layer and head as a grid of heatmaps.

    weights: (T_out, L, H, S) — rows are layers, columns heads; each panel is (T_out, S).
    """
    plt = pyplot()
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 4 or weights.shape[0] != len(tgt_labels) or \
            weights.shape[3] != len(src_labels):
        raise ValueError(f"weights {weights.shape} are not (T_out={len(tgt_labels)}, L, H, "
                         f"S={len(src_labels)})")
    _, layers, heads, _ = weights.shape
    panel_w = min(1.5 + 0.22 * len(src_labels), 12)
    panel_h = min(1.2 + 0.2 * len(tgt_labels), 12)
    fig, axes = plt.subplots(layers, heads, figsize=(panel_w * heads, panel_h * layers),
                             dpi=90, squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(weights[:, layer, head], cmap="viridis", aspect="auto", vmin=0.0,
                      vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            ax.set_xticks(range(len(src_labels)))
            ax.set_yticks(range(len(tgt_labels)))
            ax.set_xticklabels(src_labels if layer == layers - 1 else [], rotation=70,
                               ha="right", fontsize=7)
            ax.set_yticklabels(tgt_labels if head == 0 else [], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_alignment(weights: np.ndarray, src_words: Sequence[str], tgt_words: Sequence[str],
                   path: str | Path, predicted: set[tuple[int, int]] | None = None,
                   sure: set[tuple[int, int]] | None = None,
                   possible: set[tuple[int, int]] | None = None,
                   title: str | None = None) -> Path:
    """A word-level attention heatmap (T_words, S_words) with alignment links drawn on it.

    Links are (source, target) word indices: predicted links as white dots, gold sure links
    as red squares, gold possible-only links as orange dashed squares.
    """
    plt = pyplot()
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(tgt_words), len(src_words)):
        raise ValueError(f"weights {weights.shape} do not match {len(tgt_words)} target x "
                         f"{len(src_words)} source words")
    fig, ax = plt.subplots(figsize=(min(4 + 0.35 * len(src_words), 40),
                                    min(3 + 0.32 * len(tgt_words), 40)), dpi=100)
    ax.imshow(weights, cmap="Blues", aspect="auto", vmin=0.0, vmax=1.0, interpolation="nearest")
    from matplotlib.patches import Rectangle

    for i, j in sorted((possible or set()) - (sure or set())):
        ax.add_patch(Rectangle((i - 0.45, j - 0.45), 0.9, 0.9, fill=False, ec="orange",
                               lw=1.2, ls="--"))
    for i, j in sorted(sure or set()):
        ax.add_patch(Rectangle((i - 0.45, j - 0.45), 0.9, 0.9, fill=False, ec="red", lw=1.5))
    if predicted:
        xs, ys = zip(*sorted(predicted), strict=True)
        ax.scatter(xs, ys, s=22, c="white", edgecolors="black", linewidths=0.8, zorder=3,
                   label="predicted")
    ax.set_xticks(range(len(src_words)))
    ax.set_xticklabels(src_words, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(tgt_words)))
    ax.set_yticklabels(tgt_words, fontsize=9)
    ax.set_xlim(-0.5, len(src_words) - 0.5)
    ax.set_ylim(len(tgt_words) - 0.5, -0.5)
    ax.set_xlabel("source words (red: gold sure link, orange dashed: possible; dots: predicted)")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


_HTML_TEMPLATE = Path(__file__).parent.parent / "assets" / "attention.html"


def attention_html(weights: np.ndarray, src_labels: Sequence[str], tgt_labels: Sequence[str],
                   path: str | Path, title: str = "heedful attention") -> Path:
    """Write a self-contained HTML page (inline CSS/JS, no network) with an interactive
    heatmap: hover a target token to highlight the source tokens it attends to most, or a
    source token for the reverse; layer/head selectors when there are several.

    weights: (T_out, L, H, S).
    """
    import html
    import json

    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 4 or weights.shape[0] != len(tgt_labels) or \
            weights.shape[3] != len(src_labels):
        raise ValueError(f"weights {weights.shape} are not (T_out={len(tgt_labels)}, L, H, "
                         f"S={len(src_labels)})")
    data = {"src": list(src_labels), "tgt": list(tgt_labels),
            "weights": np.round(weights, 4).tolist()}
    # "</" inside the JSON would end the <script> element early
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    page = (_HTML_TEMPLATE.read_text(encoding="utf-8")
            .replace("__TITLE__", html.escape(title)).replace("__DATA__", payload))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
