"""Images as model inputs: reading, normalising and batching.

Every image becomes one ``(H, W)`` uint8 array, **ink high, background 0**: read with Pillow,
converted to grayscale, scaled to the run's fixed height ``H`` (``data.image_height``; the
width follows the aspect ratio), inverted (documents are dark ink on a light page: after the
inversion the background is 0, which is also what padding adds), and padded on the right to a
multiple of :data:`WIDTH_STRIDE` — the image encoder's horizontal downsampling — so an image
is cut into the same encoder columns alone and inside a padded batch.

A batch is ``(B, 1, H, W_max)`` uint8 (a quarter of float32's bytes on the way to a device;
the encoder scales to [0, 1]) and a column mask ``(B, W_max)``, True on the image's own
columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch

from heedful.errors import DataError

WIDTH_STRIDE = 4
"""The image encoder's horizontal downsampling: images are padded to a multiple of it."""
HEIGHT_STRIDE = 16
"""The image encoder's vertical downsampling: ``data.image_height`` must be a multiple."""
MAX_WIDTH = 4096
"""The widest image (after scaling to the run's height) a model reads; wider ones are refused
by name rather than exhausting memory."""


def _decompression_guard() -> None:
    from PIL import Image

    # a decompression bomb is refused by Pillow itself above this many pixels
    Image.MAX_IMAGE_PIXELS = 64_000_000


def normalise(gray: np.ndarray, height: int, origin: str = "image") -> np.ndarray:
    """A grayscale page (H0, W0) uint8, dark ink on light -> the model's (height, W) array:
    scaled to ``height`` rows, inverted, right-padded to a multiple of :data:`WIDTH_STRIDE`."""
    from PIL import Image

    if gray.ndim != 2 or gray.size == 0:
        raise DataError(f"{origin}: expected a non-empty 2-D grayscale image, got shape "
                        f"{tuple(gray.shape)}")
    h0, w0 = gray.shape
    width = max(1, round(w0 * height / h0))
    if width > MAX_WIDTH:
        raise DataError(f"{origin}: {width} pixels wide at height {height}, wider than the "
                        f"{MAX_WIDTH} a model reads (crop or split it)")
    if (h0, w0) != (height, width):
        img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
        gray = np.asarray(img.resize((width, height), Image.Resampling.BILINEAR))
    padded = -(-width // WIDTH_STRIDE) * WIDTH_STRIDE
    out = np.zeros((height, padded), dtype=np.uint8)
    out[:, :width] = 255 - gray
    return out


def read_image(path: str | Path | IO[bytes], height: int, where: str | None = None
               ) -> np.ndarray:
    """Read an image file (or an open binary stream) into the model's (height, W) uint8
    array (see :func:`normalise`).

    Raises :class:`DataError` naming the file (and ``where``, e.g. a manifest line or a
    request field) for a missing, unreadable or corrupt file."""
    gray, origin = _decoded(path, where)
    return normalise(gray, height, origin)


def decode_image(path: str | Path | IO[bytes], where: str | None = None
                 ) -> tuple[np.ndarray, str]:
    """An image file or stream as a grayscale page (H, W) uint8 (dark ink on light, as
    given) and its name for messages; errors as :func:`read_image`'s."""
    return _decoded(path, where)


def _decoded(path: str | Path | IO[bytes], where: str | None) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    _decompression_guard()
    name = str(path) if isinstance(path, str | Path) else None
    origin = ": ".join(p for p in (where, name) if p) or "image"
    try:
        with Image.open(path) as img:
            img.load()
            gray = np.asarray(_to_gray(img))
    except FileNotFoundError:
        raise DataError(f"{origin}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{origin}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise DataError(f"{origin}: not an image Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{origin}: corrupt or unreadable image ({err})") from None
    if gray.size == 0:
        raise DataError(f"{origin}: the image is empty (0 pixels)")
    return gray, origin


def _to_gray(img: object) -> object:
    """A Pillow image as 8-bit grayscale, transparency composited onto white."""
    from PIL import Image

    assert isinstance(img, Image.Image)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(page, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # wide grayscale: to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8))
    return img.convert("L")


def from_array(array: np.ndarray, height: int, origin: str = "array") -> np.ndarray:
    """An image given as an array — (H, W) grayscale or (H, W, 3/4) colour, uint8 or float
    in [0, 1], dark ink on light — into the model's (height, W) uint8 array."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        a = np.clip(a * 255.0, 0, 255).round().astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = (a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
             ).round().astype(np.uint8)
    return normalise(a, height, origin)


def encoder_columns(width: int) -> int:
    """Encoder columns of a normalised image ``width`` pixels wide."""
    return -(-width // WIDTH_STRIDE)


def collate(images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (H, W_i) -> the batch (B, 1, H, W_max) uint8, zero-padded on the
    right, and the column mask (B, W_max) bool (True on each image's own columns)."""
    height = images[0].shape[0]
    widest = max(im.shape[1] for im in images)
    batch = np.zeros((len(images), 1, height, widest), dtype=np.uint8)
    mask = np.zeros((len(images), widest), dtype=bool)
    for row, im in enumerate(images):
        if im.shape[0] != height:
            raise ValueError(f"images of different heights in one batch ({im.shape[0]} and "
                             f"{height})")
        batch[row, 0, :, : im.shape[1]] = im
        mask[row, : im.shape[1]] = True
    # NumPy only until here: this runs on the batch-assembling thread too
    return torch.from_numpy(batch), torch.from_numpy(mask)
