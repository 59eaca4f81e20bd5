"""Attention drawn back onto the picture: what each output character of a transcription
looked at.

The image encoder's memory slots are cells of its feature map, each with a box in the input
image (:attr:`heedful.decoding.transcriber.Transcription.boxes`); an output step's attention
over slots becomes a heat map over the image by giving every pixel of a slot's box that
slot's weight. :func:`plot_image_attention` writes a grid of overlays, one panel per output
character; :func:`image_attention_html` a self-contained page where hovering a character
lights the regions it attended to.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from heedful.analysis.plots import pyplot, save_figure


def heat_map(weights: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One step's weights (S,) over slots with boxes (S, 4) (x0, y0, x1, y1) -> an
    (height, width) map of the image ``size`` (width, height); each pixel holds the weight
    of the slot whose box covers it (boxes tile the image, so none overlap)."""
    width, height = size
    heat = np.zeros((height, width), dtype=np.float32)
    for w, (x0, y0, x1, y1) in zip(np.asarray(weights, dtype=np.float32), boxes, strict=True):
        heat[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)] = w
    return heat


def plot_image_attention(image: np.ndarray, weights: np.ndarray, boxes: np.ndarray,
                         tgt_labels: Sequence[str], path: str | Path,
                         title: str | None = None, columns: int = 4) -> Path:
    """Save a grid of overlays: for each output step (weights (T, S)), the image in gray
    with that step's attention in colour, titled with the step's output piece."""
    plt = pyplot()
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(tgt_labels), len(boxes)):
        raise ValueError(f"weights {weights.shape} do not match {len(tgt_labels)} outputs x "
                         f"{len(boxes)} slots")
    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2)
    height, width = gray.shape
    steps = len(tgt_labels)
    cols = max(1, min(columns, steps))
    rows = -(-steps // cols)
    panel_w = min(max(width / 40, 2.5), 8.0)
    panel_h = panel_w * height / width + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_h * rows), dpi=100,
                             squeeze=False)
    top = max(float(weights.max()), 1e-6)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= steps:
            continue
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat_map(weights[k], boxes, (width, height)), cmap="inferno", alpha=0.55,
                  vmin=0.0, vmax=top, interpolation="nearest")
        label = tgt_labels[k].replace("▁", "␣") if tgt_labels[k] != "</s>" else "</s>"
        ax.set_title(f"{k + 1}: {label}", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def image_attention_html(image: np.ndarray, weights: np.ndarray, boxes: np.ndarray,
                         tgt_labels: Sequence[str], path: str | Path,
                         title: str = "heedful attention",
                         hint: str = "Hover a character to light the regions of the image it "
                                     "attended to.", stretch: bool = False) -> Path:
    """Write a self-contained page (inline image, CSS and JS; no network): the image (a
    spectrogram picture for audio: a few dozen rows, stretched to a readable height), and the
    output characters beneath it; hovering (or tapping) a character lights each slot's box in
    proportion to its attention weight. ``stretch``: draw a short picture (a spectrogram)
    at least 160 pixels high."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image).astype(np.uint8)).save(buffer, format="PNG")
    data = {"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
            "boxes": np.asarray(boxes).tolist(), "tgt": list(tgt_labels),
            "weights": np.round(np.asarray(weights, dtype=float), 4).tolist(),
            "stretch": stretch}
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    page = (_PAGE.replace("__TITLE__", html.escape(title)).replace("__HINT__", html.escape(hint))
            .replace("__DATA__", payload))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
#stage { position: relative; display: inline-block; }
#stage img { display: block; image-rendering: pixelated; }
#stage canvas { position: absolute; left: 0; top: 0; pointer-events: none; }
#out span { display: inline-block; min-width: 1.2em; padding: .2em .3em; margin: .1em;
  border: 1px solid #ccc; border-radius: 4px; font: 1.4em monospace; text-align: center;
  cursor: pointer; }
#out span.on { background: #ffb000; }
</style></head><body>
<h1>__TITLE__</h1>
<div id="stage"><img id="img" alt="input"><canvas id="heat"></canvas></div>
<p>__HINT__</p>
<div id="out"></div>
<script>
const D = __DATA__;
const img = document.getElementById("img"), canvas = document.getElementById("heat");
const out = document.getElementById("out");
img.onload = () => {
  const scale = Math.max(1, Math.min(4, 800 / img.naturalWidth));
  const yscale = D.stretch ? Math.max(scale, 160 / img.naturalHeight) : scale;
  img.width = img.naturalWidth * scale; img.height = img.naturalHeight * yscale;
  canvas.width = img.width; canvas.height = img.height;
  canvas.dataset.scale = scale; canvas.dataset.yscale = yscale;
};
img.src = D.image;
function show(k) {
  const ctx = canvas.getContext("2d"), s = +canvas.dataset.scale || 1;
  const ys = +canvas.dataset.yscale || s;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  document.querySelectorAll("#out span").forEach((e, i) => e.classList.toggle("on", i === k));
  if (k < 0) return;
  const w = D.weights[k], top = Math.max(...w, 1e-6);
  D.boxes.forEach((b, i) => {
    ctx.fillStyle = `rgba(255, 80, 0, ${0.75 * w[i] / top})`;
    ctx.fillRect(b[0] * s, b[1] * ys, (b[2] - b[0]) * s, (b[3] - b[1]) * ys);
  });
}
D.tgt.forEach((t, k) => {
  const e = document.createElement("span");
  e.textContent = t === "</s>" ? "⏎" : t.replace("▁", "␣");
  e.onmouseenter = () => show(k); e.onclick = () => show(k);
  out.appendChild(e);
});
out.onmouseleave = () => show(-1);
</script></body></html>
"""
