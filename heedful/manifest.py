"""Manifests: the corpus format of non-text sources (images now, audio later).

A corpus is a folder (``data.dir``) holding one manifest per split — ``train.tsv``,
``dev.tsv``, ``test.tsv`` — each line a file path relative to the manifest's folder, a tab,
and the target text::

    images/train/000000.png<TAB>40719

The reader checks the shape of every line (a row without a tab, an empty path, a file that
does not exist); reading the files themselves is the source's job (:mod:`heedful.vision`),
and its errors name the manifest and line too (:class:`ManifestEntry` carries them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heedful.errors import DataError
from heedful.lines import read_lines

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: the file (resolved against the manifest's folder), the target
    text, and where the line is (for error messages)."""

    path: Path
    target: str
    manifest: str
    line: int

    @property
    def where(self) -> str:
        """``MANIFEST line N`` for messages."""
        return f"{self.manifest} line {self.line}"


def manifest_path(data_dir: str | Path, split: str) -> Path:
    """The manifest of ``split`` in ``data_dir``."""
    return Path(data_dir) / f"{split}.tsv"


def read_manifest(path: str | Path, check_files: bool = True) -> list[ManifestEntry]:
    """The entries of a manifest, in order; blank lines are skipped (their numbers still
    count). Raises :class:`DataError` naming the manifest and line for a row without a tab,
    an empty path or target, and (``check_files``) a file that is missing or a directory."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}" if not path.exists()
                        else f"manifest {path} is a directory, not a file")
    base = path.parent
    entries = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        if "\t" not in line:
            raise DataError(f"{where}: expected a file path, a tab and the target text; "
                            f"found no tab in {line[:80]!r}")
        name, target = line.split("\t", 1)
        name, target = name.strip(), target.strip()
        if not name:
            raise DataError(f"{where}: the file path (before the tab) is empty")
        if not target:
            raise DataError(f"{where}: the target text (after the tab) is empty")
        file = base / name
        if check_files and not file.is_file():
            raise DataError(f"{where}: file not found: {file}" if not file.exists()
                            else f"{where}: {file} is a directory, not a file")
        entries.append(ManifestEntry(file, target, str(path), number))
    if not entries:
        raise DataError(f"manifest {path} has no entries")
    return entries
