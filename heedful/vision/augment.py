"""Random distortions of training images (``data.augment``), drawn afresh for every batch.

A digit-string corpus is built from a few thousand handwritten digits, so a model soon knows
every training digit by heart; distorting each image a little every time it is drawn
(Simard et al. 2003) makes every draw a new piece of handwriting. Each training image gets

- an **affine** distortion about its centre: rotation (``rotate`` degrees at most), slant
  (``shear``: x moves by ``shear`` x the height above the centre row), scale (``scale``:
  vertically by up to that fraction either way, horizontally never wider, so the margins at
  both ends keep the first and last characters in the picture) and a vertical shift
  (``shift`` pixels at most);
- an **elastic** warp (``warp``: pixels): the vertices of an 8 x 8-pixel grid move at random
  (normal, that standard deviation) and the image follows piecewise (Pillow's mesh
  transform), so neighbouring characters bend differently;
- a stroke change with probability ``stroke``: one pass of a 3 x 3 maximum filter (thicker
  ink; ink is high in the model's arrays).

Images keep their shape — the batch plan has counted their memory slots; what moves in from
outside the picture is background (0). The distortions are a pure function of the batch's seed
(:func:`heedful.batching.batch_seed`), so a resumed run draws the same ones. NumPy and Pillow
only: this runs on the batch-assembling thread, where a torch op could start a second OpenMP
team (see :mod:`heedful.batching`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_CELL = 8
"""The elastic warp's grid: vertices every this many pixels."""


class AugmentConfig(BaseModel):
    """``data.augment``: random distortions of training images (never of dev/test ones);
    every field 0 turns that distortion off."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rotate: float = Field(0.0, ge=0, le=45)
    """Rotation, degrees at most either way."""
    shear: float = Field(0.0, ge=0, le=1)
    """Slant: horizontal shift per pixel above the centre row, at most, either way."""
    scale: float = Field(0.0, ge=0, lt=1)
    """Scale change, a fraction at most either way (horizontally only ever narrower)."""
    shift: float = Field(0.0, ge=0)
    """Vertical shift, pixels at most either way."""
    warp: float = Field(0.0, ge=0, le=8)
    """Elastic warp: the standard deviation (pixels) of each grid vertex's displacement."""
    stroke: float = Field(0.0, ge=0, le=1)
    """The probability of thickening the strokes by one pixel."""

    @property
    def active(self) -> bool:
        return any(v > 0 for v in self.model_dump().values())


def _affine(width: int, height: int, angle: float, shear: float, scale_x: float,
            scale_y: float, shift_y: float) -> tuple[float, ...]:
    """Pillow's AFFINE coefficients (output pixel -> input pixel) of rotating, slanting,
    scaling about the image centre and shifting vertically."""
    cx, cy = width / 2.0, height / 2.0
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: p' = T(c + shift) · R · Sh · S · T(-c) p
    forward = (np.array([[1, 0, cx], [0, 1, cy + shift_y], [0, 0, 1]])
               @ np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
               @ np.array([[1, -shear, 0], [0, 1, 0], [0, 0, 1]])
               @ np.array([[scale_x, 0, 0], [0, scale_y, 0], [0, 0, 1]])
               @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]]))
    inverse = np.linalg.inv(forward)
    return tuple(float(v) for v in inverse[:2].ravel())


def _mesh(width: int, height: int, sigma: float, rng: np.random.Generator
          ) -> list[tuple[tuple[int, int, int, int], tuple[float, ...]]]:
    """Pillow's MESH: for every 8 x 8 output cell, the quadrilateral of the input it shows,
    from a grid whose vertices moved by N(0, sigma) pixels."""
    xs = np.linspace(0, width, max(2, round(width / _CELL) + 1))
    ys = np.linspace(0, height, max(2, round(height / _CELL) + 1))
    gx, gy = np.meshgrid(xs, ys)  # (rows, cols) vertex positions
    moved_x = gx + rng.normal(0, sigma, gx.shape)
    moved_y = gy + rng.normal(0, sigma, gy.shape)
    mesh = []
    for r in range(len(ys) - 1):
        for c in range(len(xs) - 1):
            box = (round(xs[c]), round(ys[r]), round(xs[c + 1]), round(ys[r + 1]))
            # source corners in Pillow's order: upper-left, lower-left, lower-right, upper-right
            quad = (moved_x[r, c], moved_y[r, c], moved_x[r + 1, c], moved_y[r + 1, c],
                    moved_x[r + 1, c + 1], moved_y[r + 1, c + 1],
                    moved_x[r, c + 1], moved_y[r, c + 1])
            mesh.append((box, tuple(float(v) for v in quad)))
    return mesh


def distort(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One distorted copy of ``image`` (H, W) uint8, ink high, background 0."""
    from PIL import Image, ImageFilter

    height, width = image.shape
    picture = Image.fromarray(np.ascontiguousarray(image))
    # the draws happen whether or not a distortion is on, so turning one on or off does not
    # change what the others draw
    angle = math.radians(rng.uniform(-cfg.rotate, cfg.rotate))
    shear = rng.uniform(-cfg.shear, cfg.shear)
    scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    shift = rng.uniform(-cfg.shift, cfg.shift)
    thicken = rng.random() < cfg.stroke
    if cfg.rotate or cfg.shear or cfg.scale or cfg.shift:
        picture = picture.transform(
            picture.size, Image.Transform.AFFINE,
            _affine(width, height, angle, shear, min(scale, 1.0), scale, shift),
            resample=Image.Resampling.BILINEAR, fillcolor=0)
    if cfg.warp:
        picture = picture.transform(picture.size, Image.Transform.MESH,
                                    _mesh(width, height, cfg.warp, rng),
                                    resample=Image.Resampling.BILINEAR, fillcolor=0)
    if thicken:
        picture = picture.filter(ImageFilter.MaxFilter(3))
    return np.asarray(picture).copy()


class ImageAugmenter:
    """Distorts a batch's images: ``(images, seed) -> images``, a pure function of the seed
    (each image draws from its own stream of it)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, images: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
        streams = np.random.SeedSequence(seed).spawn(len(images))
        return [distort(image, self.cfg, np.random.default_rng(stream))
                for image, stream in zip(images, streams, strict=True)]
