"""The text-lines corpus (``heedful data text-lines``) and the ``ocr-lines`` preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from heedful.cli import main
from heedful.vision.text_lines import FONT_ROOT, TEST_FAMILIES, TRAIN_FAMILIES

SAMPLE = Path(__file__).resolve().parent.parent / "heedful" / "datasets" / "text_lines_sample"


def _fonts_installed() -> bool:
    """At least two families of each split have a font file (names only: cheap enough for
    collection time; the build itself reads the fonts)."""
    names = {p.name for p in FONT_ROOT.rglob("*.[ot]tf")} if FONT_ROOT.is_dir() else set()
    return all(sum(any(n in names for n in files) for files in families.values()) >= 2
               for families in (TRAIN_FAMILIES, TEST_FAMILIES))


needs_fonts = pytest.mark.skipif(not _fonts_installed(),
                                 reason="the fonts are not installed (apt-get install "
                                        "fonts-dejavu-core fonts-urw-base35 ...)")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_fonts
def test_the_build_is_deterministic_and_tests_unseen_fonts(tmp_path: Path) -> None:
    argv = ["data", "text-lines", "--train", "12", "--dev", "3", "--test", "6"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b"), "--seed", "1"]) == 0
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b")  # byte for byte
    from PIL import Image

    for split, count in (("train", 12), ("dev", 3), ("test", 6)):
        rows = (tmp_path / "a" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        fonts = (tmp_path / "a" / f"{split}.fonts.tsv").read_text(encoding="utf-8").splitlines()
        assert len(rows) == len(fonts) == count
        for row, font in zip(rows, fonts, strict=True):
            path, text = row.split("\t")
            assert 0 < len(text) <= 40 and text == text.strip()
            with Image.open(tmp_path / "a" / path) as img:
                assert img.mode == "L" and img.height == 32 and img.width > 8
            family = font.split("\t")[0]
            assert family in (TEST_FAMILIES if split == "test" else TRAIN_FAMILIES)
    readme = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    assert "never drawn in training or dev" in readme and "C059" in readme


def test_missing_fonts_are_named_with_the_packages_to_install(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    assert main(["data", "text-lines", "--out", str(tmp_path / "out"),
                 "--fonts", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"heedful: error: text-lines: found 0 of the train split's font families under " \
           f"{empty}" in err
    assert "apt-get install fonts-dejavu-core" in err
    assert not (tmp_path / "out").exists()


def test_the_ocr_lines_preset_trains_on_the_shipped_sample(tmp_path: Path) -> None:
    """The preset's settings hold together: two updates and a validation on the sample that
    ships with heedful (24 lines; built by the command above, README with the licenses)."""
    assert (SAMPLE / "README.md").exists() and len((SAMPLE / "train.tsv").read_text(
        encoding="utf-8").splitlines()) == 16
    run = tmp_path / "run"
    assert main(["train", "--preset", "ocr-lines", f"data.dir={SAMPLE}", "model.hidden_dim=32",
                 "model.embed_dim=16", "model.image_channels=[8,8,16,16]",
                 "train.max_steps=2", "train.valid_every=2", "--run-dir", str(run),
                 "--no-progress"]) == 0
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "step 2: dev" in log and "CER" in log
