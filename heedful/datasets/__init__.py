"""Corpora that ship inside the package, by name.

``bible-es-en``: Spanish Reina-Valera 1909 -> English King James, verse-aligned, with gold
word alignments for dev and test (see ``bible_es_en/README.md`` for source, license and
statistics).

Samples (tests and quick experiments; the full sets are built by ``heedful data``):
``debian-desc-summ`` (Debian package descriptions -> synopsis, 200 pairs; see its README).
"""

from __future__ import annotations

from pathlib import Path

from heedful.errors import UnknownNameError

_HERE = Path(__file__).parent

BUNDLED: dict[str, tuple[Path, str, str]] = {
    # name: (folder, source suffix, target suffix)
    "bible-es-en": (_HERE / "bible_es_en", "es", "en"),
}

SAMPLES: dict[str, Path] = {
    # name: folder with sample.src / sample.tgt; the full set is built by `heedful data`
    "debian-desc-summ": _HERE / "debian_desc_summ",
}


def dataset_names() -> list[str]:
    return sorted(BUNDLED)


def dataset_split(name: str, split: str) -> tuple[Path, Path]:
    """(source file, target file) of a bundled dataset's split (train files are gzipped)."""
    if name not in BUNDLED:
        raise UnknownNameError(f"unknown dataset {name!r}; bundled datasets: "
                               f"{', '.join(dataset_names())}")
    folder, s, t = BUNDLED[name]
    gz = ".gz" if split == "train" else ""
    src, tgt = folder / f"{split}.{s}{gz}", folder / f"{split}.{t}{gz}"
    if not src.exists():
        raise UnknownNameError(f"dataset {name!r} has no split {split!r}")
    return src, tgt


def english_verses(split: str) -> list[str]:
    """The English side of ``bible-es-en``'s split, a verse a line (what the text-line and
    spoken-sentence corpora say and render)."""
    import gzip

    path = dataset_split("bible-es-en", split)[1]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def dataset_file(name: str, filename: str) -> Path:
    """Another file of a bundled dataset (e.g. ``test.align``)."""
    folder = BUNDLED[name][0] if name in BUNDLED else SAMPLES[name]
    return folder / filename
