"""A tiny synthetic image corpus for tests and smoke checks: strings of four glyphs drawn
with NumPy (no fonts, no downloads), written as PNG files with manifests in the layout of
:mod:`heedful.manifest`.

The glyphs are 12 x 8 bitmaps distinct enough that a small model learns to read strings of
them within a minute on a CPU; the positions of the glyphs vary, so reading them is a matter
of attending to the right place, not of memorising the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GLYPHS: dict[str, list[str]] = {
    "a": ["##......", "##......", "##......", "##......", "##......", "##......",
          "##......", "##......", "##......", "##......", "########", "########"],
    "b": ["########", "########", "##....##", "##....##", "##....##", "##....##",
          "##....##", "##....##", "##....##", "##....##", "########", "########"],
    "c": ["##....##", ".##..##.", "..####..", "...##...", "..####..", ".##..##.",
          "##....##", "##....##", ".##..##.", "..####..", "...##...", "...##..."],
    "d": ["...##...", "...##...", "...##...", "########", "########", "...##...",
          "...##...", "...##...", "...##...", "...##...", "...##...", "...##..."],
}
"""The alphabet: each glyph's rows, ``#`` ink."""


def _bitmap(name: str) -> np.ndarray:
    return np.array([[ch == "#" for ch in row] for row in GLYPHS[name]], dtype=bool)


def render(text: str, rng: np.random.Generator, height: int = 16) -> np.ndarray:
    """``text`` (glyph names) drawn dark on a light page: (height, W) uint8, with random
    gaps, margins and vertical offsets."""
    pieces = [np.full((height, int(rng.integers(1, 6))), False)]
    for ch in text:
        glyph = _bitmap(ch)
        top = int(rng.integers(0, height - glyph.shape[0] + 1))
        column = np.full((height, glyph.shape[1]), False)
        column[top : top + glyph.shape[0]] = glyph
        pieces += [column, np.full((height, int(rng.integers(1, 5))), False)]
    ink = np.concatenate(pieces, axis=1)
    return np.where(ink, 20, 235).astype(np.uint8)


def write_glyph_corpus(out_dir: Path, sizes: dict[str, int], max_length: int = 4,
                       seed: int = 0, height: int = 16) -> Path:
    """Write ``sizes[split]`` images of random glyph strings (1..max_length glyphs) and the
    manifests ``{split}.tsv`` into ``out_dir``; returns ``out_dir``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    alphabet = sorted(GLYPHS)
    for split, count in sizes.items():
        folder = out_dir / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            length = int(rng.integers(1, max_length + 1))
            text = "".join(alphabet[int(k)] for k in rng.integers(0, len(alphabet), length))
            name = f"images/{split}/{i:05d}.png"
            Image.fromarray(render(text, rng, height)).save(out_dir / name)
            lines.append(f"{name}\t{text}\n")
        (out_dir / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    return out_dir
