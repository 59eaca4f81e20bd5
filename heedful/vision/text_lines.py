"""The ``text-lines`` corpus: printed and handwriting-style text-line images -> their text.

Built by ``heedful data text-lines --out DIR`` from the English side of the bundled
``bible-es-en`` corpus (its own train/dev/test splits) and fonts that Debian packages: each
verse is wrapped into lines of at most ``WRAP`` characters, as a printed page would, and each
line is drawn in a random font, size, ink and paper shade, slanted, blurred and sprinkled with
noise. The test split is drawn in font families that training never sees (``TEST_FAMILIES``),
so its score measures reading unseen type, the case an OCR engine meets.

Layout of ``DIR`` (that of :mod:`heedful.manifest`)::

    train.tsv dev.tsv test.tsv    images/{split}/{index:06d}.png<TAB>{text}, one per line
    {split}.fonts.tsv             the font family<TAB>font file of each manifest line
    images/{train,dev,test}/      8-bit grayscale PNGs, height 32, variable width
    stats.json                    lines, fonts and mean width per split
    README.md                     how it was built, the fonts of each split, the licenses

The same seed, fonts and settings give byte-identical files; every split draws from its own
random stream, so ``--train`` does not change dev or test.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heedful.datasets import english_verses
from heedful.errors import CorpusBuildError

HEIGHT = 32
WRAP = 40
SPLITS = ("train", "dev", "test")
STREAMS = {"train": 11, "dev": 12, "test": 13}
FONT_ROOT = Path("/usr/share/fonts")
APT_PACKAGES = ("fonts-dejavu-core", "fonts-liberation2", "fonts-freefont-ttf",
                "fonts-urw-base35", "fonts-dkg-handwriting", "fonts-bwht")

TRAIN_FAMILIES: dict[str, tuple[str, ...]] = {
    "DejaVu Sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"),
    "DejaVu Serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf"),
    "DejaVu Sans Mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
    "Liberation Sans": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf",
                        "LiberationSans-Italic.ttf"),
    "Liberation Serif": ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf",
                         "LiberationSerif-Italic.ttf"),
    "Liberation Mono": ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf"),
    "FreeSans": ("FreeSans.ttf", "FreeSansBold.ttf", "FreeSansOblique.ttf"),
    "FreeSerif": ("FreeSerif.ttf", "FreeSerifBold.ttf", "FreeSerifItalic.ttf"),
    "FreeMono": ("FreeMono.ttf", "FreeMonoBold.ttf"),
    "Nimbus Sans": ("NimbusSans-Regular.otf", "NimbusSans-Bold.otf", "NimbusSans-Italic.otf"),
    "Nimbus Roman": ("NimbusRoman-Regular.otf", "NimbusRoman-Bold.otf",
                     "NimbusRoman-Italic.otf"),
    "URW Bookman": ("URWBookman-Light.otf", "URWBookman-Demi.otf"),
    "URW Gothic": ("URWGothic-Book.otf", "URWGothic-Demi.otf"),
    "DkgHandwriting": ("dkg.ttf", "dkgBd.ttf"),
    "Because We Build": ("BecauseWeBuild-Regular.otf",),
    "Because We Connect": ("BecauseWeConnect-Regular.otf",),
    "Because We Create": ("BecauseWeCreate-Regular.otf",),
    "Because We Learn": ("BecauseWeLearn-Regular.otf",),
}
"""Font families of train and dev: family -> font files (found anywhere under the font root)."""

TEST_FAMILIES: dict[str, tuple[str, ...]] = {
    "C059": ("C059-Roman.otf", "C059-Bold.otf", "C059-Italic.otf"),
    "P052": ("P052-Roman.otf", "P052-Bold.otf", "P052-Italic.otf"),
    "Because We Mentor": ("BecauseWeMentor-Regular.otf",),
    "Because We Organize": ("BecauseWeOrganize-Regular.otf",),
}
"""Font families of the test split alone (Century Schoolbook and Palatino clones, two
handwriting-style fonts): never drawn in training."""


@dataclass(frozen=True)
class Font:
    family: str
    path: Path
    covers: frozenset[str]  # the characters it has glyphs for


def find_fonts(families: dict[str, tuple[str, ...]], root: Path) -> list[Font]:
    """The fonts of ``families`` found under ``root``, in a fixed order."""
    from fontTools.ttLib import TTFont

    by_name: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in (".ttf", ".otf"):
            by_name.setdefault(path.name, path)
    fonts = []
    for family, names in families.items():
        for name in names:
            if name in by_name:
                with TTFont(by_name[name], lazy=True) as tt:
                    cmap = tt.getBestCmap() or {}
                fonts.append(Font(family, by_name[name], frozenset(map(chr, cmap))))
    return fonts


def wrap_lines(verses: list[str]) -> list[str]:
    """The verses as lines of at most ``WRAP`` characters, broken at spaces."""
    lines = []
    for verse in verses:
        lines.extend(textwrap.wrap(" ".join(verse.split()), WRAP, break_long_words=True))
    return lines


def render_line(text: str, font: Font, rng: np.random.Generator) -> np.ndarray:
    """``text`` drawn in ``font``: (HEIGHT, W) uint8, dark ink on light paper, at a random
    size and shade, slanted by a random shear, blurred and with Gaussian noise."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(30, 41))
    face = ImageFont.truetype(str(font.path), size)
    left, top, right, bottom = (int(v) for v in face.getbbox(text))
    pad = int(rng.integers(4, 13))
    canvas = Image.new("L", (right - left + 2 * pad + size, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad + size // 2 - left, pad - top), text, font=face, fill=255)
    shear = float(rng.uniform(-0.25, 0.25))  # slant: x' = x + shear * (y - centre)
    h = canvas.height
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE,
                              (1, shear, -shear * h / 2, 0, 1, 0),
                              resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox() or (0, 0, canvas.width, canvas.height)
    margin = int(rng.integers(2, 9))
    canvas = canvas.crop((max(box[0] - margin, 0), max(box[1] - 3, 0),
                          min(box[2] + margin, canvas.width), min(box[3] + 3, canvas.height)))
    width = max(1, round(canvas.width * HEIGHT / canvas.height))
    canvas = canvas.resize((width, HEIGHT), Image.Resampling.LANCZOS)
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.9))))
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    paper, dark = float(rng.uniform(200, 255)), float(rng.uniform(0, 70))
    pixels = paper - ink * (paper - dark) + rng.normal(0.0, float(rng.uniform(0, 10)), ink.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)



def _write_split(out_dir: Path, split: str, lines: list[str], fonts: list[Font],
                 rng: np.random.Generator) -> dict[str, object]:
    """Render and save the split's lines and its manifest; return its statistics."""
    from PIL import Image

    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        stale.unlink()  # a previous, larger build's images would outlive its manifest
    rows: list[str] = []
    families: list[str] = []
    widths: list[int] = []
    uncovered = 0
    used: dict[str, int] = {}
    for text in lines:
        covering = [f for f in fonts if set(text) <= f.covers]
        if not covering:
            uncovered += 1  # no font of this split has every character: left out
            continue
        font = covering[int(rng.integers(len(covering)))]
        pixels = render_line(text, font, rng)
        name = f"images/{split}/{len(rows):06d}.png"
        Image.fromarray(pixels).save(out_dir / name, format="PNG", optimize=False)
        rows.append(f"{name}\t{text}\n")
        families.append(f"{font.family}\t{font.path.name}\n")
        widths.append(pixels.shape[1])
        used[font.family] = used.get(font.family, 0) + 1
    (out_dir / f"{split}.tsv").write_bytes("".join(rows).encode("utf-8"))
    (out_dir / f"{split}.fonts.tsv").write_bytes("".join(families).encode("utf-8"))
    return {"lines": len(rows), "left_out": uncovered, "families": dict(sorted(used.items())),
            "mean_width": round(float(np.mean(widths)), 1) if widths else 0.0}


def build_text_lines(out_dir: Path, seed: int = 1, train: int = 20000, dev: int = 500,
                     test: int = 1000, font_root: Path = FONT_ROOT) -> dict[str, object]:
    """Build the text-lines corpus into ``out_dir`` (layout in the module docstring); return
    its statistics, also written to ``stats.json`` and summarized in ``README.md``."""
    if seed < 0 or min(train, dev, test) < 0:
        raise CorpusBuildError("text-lines: --seed, --train, --dev and --test must not be "
                               "negative")
    fonts = {"train": find_fonts(TRAIN_FAMILIES, font_root),
             "test": find_fonts(TEST_FAMILIES, font_root)}
    fonts["dev"] = fonts["train"]
    for split, families in (("train", TRAIN_FAMILIES), ("test", TEST_FAMILIES)):
        found = {f.family for f in fonts[split]}
        if len(found) < 2:
            raise CorpusBuildError(
                f"text-lines: found {len(found)} of the {split} split's font families under "
                f"{font_root} ({', '.join(families)}); at least 2 are needed: apt-get install "
                f"{' '.join(APT_PACKAGES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "dev": dev, "test": test}
    splits: dict[str, dict[str, object]] = {}
    for split in SPLITS:
        rng = np.random.default_rng([seed, STREAMS[split]])
        lines = wrap_lines(english_verses(split))
        if split == "train":  # a sample of the 109,243 lines, in corpus order
            keep = np.sort(rng.choice(len(lines), size=min(train, len(lines)), replace=False))
            lines = [lines[i] for i in keep]
        else:
            lines = lines[:counts[split]]
        split_stats = _write_split(out_dir, split, lines, fonts[split], rng)
        split_stats["fonts"] = [f.path.name for f in fonts[split]]
        splits[split] = split_stats
    stats: dict[str, object] = {"corpus": "text-lines", "seed": seed, "height": HEIGHT,
                                "wrap": WRAP, "splits": splits}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(readme(stats, train, dev, test), encoding="utf-8")
    return stats


README = """\
# text-lines: printed and handwriting-style text lines

Images of single lines of English text, each paired with the text it shows: an image ->
character sequence task (OCR of text lines).

## How it was built

Built by

    heedful data text-lines --out DIR --seed {seed} --train {train} --dev {dev} --test {test}

with the settings of this copy; the same settings and fonts give byte-identical files.

The text is the English side of heedful's bundled `bible-es-en` corpus (its own train, dev
and test splits), each verse wrapped into lines of at most {wrap} characters at spaces.
Train is a random sample of {train:,} of the training lines; dev and test are the first
lines of their splits. Each line is drawn in a random font of its split at 30-40 pixels,
slanted by a random shear of up to ±0.25, cropped, scaled to {height} pixels high, blurred
(Gaussian, radius 0-0.9), drawn in ink of gray 0-70 on paper of gray 200-255 with Gaussian
noise (sigma 0-10). A line that no font of its split can draw (a character missing from
every font) is left out.

## Splits and fonts

| split | lines | left out | mean width (px) | font families |
|---|---:|---:|---:|---|
{table}

The test split's font families are never drawn in training or dev: its score is a score on
unseen type. Font files of each split:

{font_files}

## Files

    train.tsv dev.tsv test.tsv    images/{{split}}/{{index:06d}}.png<TAB>text, one per line
                                  (path relative to this folder; UTF-8, no header)
    train.fonts.tsv ...           font family<TAB>font file of each manifest line
    images/{{train,dev,test}}/      8-bit grayscale PNGs, dark ink on light paper
    stats.json                    the numbers above

## Source and license

The text is from the `bible-es-en` corpus bundled with heedful (the English side: the King James
Version, public domain outside the United Kingdom; see that corpus's README). The fonts are
Debian's packages {packages}: DejaVu (Bitstream Vera license), Liberation (SIL Open Font
License 1.1), GNU FreeFont (GPL-3+ with the font exception), URW base35 (AGPL-3 with the font
exception), dkg-handwriting (GPL-3+ with the font exception) and Because We Handwrite
Together (SIL OFL 1.1). Images rendered with a font are not covered by the font's license;
this corpus is released to the public domain (CC0).
"""


def readme(stats: dict[str, object], train: int, dev: int, test: int) -> str:
    """The corpus README, filled in from ``stats``."""
    splits = stats["splits"]
    assert isinstance(splits, dict)
    table = "\n".join(
        f"| {name} | {s['lines']:,} | {s['left_out']:,} | {s['mean_width']} | "
        f"{', '.join(s['families'])} |" for name, s in splits.items())
    font_files = "\n".join(f"- {name}: {', '.join(s['fonts'])}"
                           for name, s in splits.items())
    return README.format(seed=stats["seed"], train=train, dev=dev, test=test,
                         wrap=stats["wrap"], height=stats["height"], table=table,
                         font_files=font_files, packages=", ".join(APT_PACKAGES))
