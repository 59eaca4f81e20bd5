"""Corpus builders behind ``heedful data``: real data for the summarization and dialogue tasks.

* :func:`build_debian_summ` -- Debian package long descriptions -> their one-line synopsis,
  from the package index apt already keeps (``*_i18n_Translation-en`` under apt's lists
  directory). The texts belong to the packages' maintainers under each package's own license,
  which is why heedful ships only a 200-pair sample and builds the full set on the user's
  machine, the same way the team's shared copy was built (same files -> identical output).
* :func:`build_chatterbot_pairs` -- context -> response pairs from the ``chatterbot-corpus``
  package (BSD-3-Clause), with a configurable number of previous turns joined by a separator.

Both write line-aligned ``{train,dev,test}.{src,tgt}`` files (train gzip-compressed) that the
``text`` data format reads, and a ``stats.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from heedful.errors import CorpusBuildError

APT_LISTS = Path("/var/lib/apt/lists")
TRANSLATION_GLOB = "*_i18n_Translation-en*"
SPLIT_SALT = "debian-desc-split-v1:"
SUMM_MIN_TOKENS, SUMM_MAX_TOKENS = 5, 400


# --------------------------------------------------------------------------- shared helpers


def split_of(unit: str, salt: str = SPLIT_SALT, test: float = 0.04, dev: float = 0.06) -> str:
    """Hash-based split of a unit (independent of order): h < 0.04 test, < 0.06 dev, train."""
    h = int(hashlib.sha256((salt + unit).encode("utf-8")).hexdigest()[:15], 16) / 16**15
    return "test" if h < test else "dev" if h < dev else "train"


def _write_splits(out_dir: Path, rows: dict[str, list[tuple[str, str, str]]]) -> dict[str, int]:
    """rows[split] = [(source, target, id)] -> {split}.{src,tgt,ids} (train gzipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        for col, ext in enumerate(("src", "tgt", "ids")):
            text = "".join(item[col] + "\n" for item in items).encode("utf-8")
            if split == "train":
                path = out_dir / f"{split}.{ext}.gz"
                path.write_bytes(gzip.compress(text, mtime=0))
            else:
                (out_dir / f"{split}.{ext}").write_bytes(text)
    return {split: len(items) for split, items in rows.items()}


# --------------------------------------------------------------------------- Debian descriptions


def read_index(path: Path) -> str:
    """An apt index file as text: plain, .gz, .xz, or .lz4 (via ``apt-helper cat-file``, which
    every apt-based system has)."""
    name = path.name
    try:
        if name.endswith(".gz"):
            return gzip.decompress(path.read_bytes()).decode("utf-8")
        if name.endswith(".xz"):
            return lzma.decompress(path.read_bytes()).decode("utf-8")
        if name.endswith(".lz4"):
            helper = shutil.which("apt-helper") or "/usr/lib/apt/apt-helper"
            if not Path(helper).exists():
                raise CorpusBuildError(f"{path}: lz4-compressed, and apt-helper (which "
                                       "decompresses apt's lists) is not installed")
            done = subprocess.run([helper, "cat-file", str(path)], capture_output=True,
                                  check=False)
            if done.returncode:
                raise CorpusBuildError(f"{path}: apt-helper cat-file failed: "
                                       f"{done.stderr.decode(errors='replace').strip()}")
            return done.stdout.decode("utf-8")
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise CorpusBuildError(f"{path}: cannot read this index file: {err}") from None


@dataclass
class Description:
    package: str
    md5: str
    synopsis: str
    paragraphs: list[str]


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", " ".join(text.split()))


def parse_translation_index(text: str, origin: str = "<index>") -> Iterator[Description]:
    """deb822 records with Package, Description-md5 and Description-en -> descriptions.

    The first line of Description-en is the synopsis; continuation lines (leading space)
    form the long description, split into paragraphs at `` .`` lines."""
    for number, record in enumerate(re.split(r"\n\s*\n", text), 1):
        if not record.strip():
            continue
        fields: dict[str, list[str]] = {}
        key = None
        for line in record.split("\n"):
            if line.startswith((" ", "\t")) and key is not None:
                fields[key].append(line[1:])
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = [value.strip()]
        if "Description-en" not in fields or "Package" not in fields:
            raise CorpusBuildError(f"{origin}: record {number} has no Package or "
                                   "Description-en field; not a Translation-en index?")
        synopsis, *body = fields["Description-en"]
        paragraphs: list[list[str]] = []
        current: list[str] = []
        for line in body:
            if line.strip() == ".":
                paragraphs.append(current)
                current = []
            else:
                current.append(line)
        paragraphs.append(current)
        joined = [_clean(" ".join(p)) for p in paragraphs]
        yield Description(fields["Package"][0], fields.get("Description-md5", [""])[0],
                          _clean(synopsis), [p for p in joined if p])


def build_debian_summ(out_dir: Path, lists_dir: Path = APT_LISTS,
                      pattern: str = TRANSLATION_GLOB) -> dict[str, object]:
    """Build the summarization set (long description -> synopsis) into ``out_dir``.

    The recipe of the shared copy (its README): descriptions shared by several packages (same
    Description-md5) are used once; source = the long description's paragraphs joined by a
    space, target = the synopsis; sources with fewer than 5 or more than 400 whitespace tokens
    are dropped; a long description that occurs more than once is kept once, with the
    synopsis of the first package by name; split by a hash of the first paragraph, so package
    families sharing an introduction stay in one split.
    """
    files = sorted(lists_dir.glob(pattern))
    if not files:
        raise CorpusBuildError(
            f"no {pattern} files in {lists_dir}. Fetch them with: apt-get update -o "
            "Acquire::Languages=en (or pass --lists DIR of a directory that has them, e.g. "
            f"apt-get update -o Dir::State::Lists=DIR -o Acquire::Languages=en)")
    descriptions: dict[str, Description] = {}
    for path in files:
        for d in parse_translation_index(read_index(path), str(path)):
            key = d.md5 or f"{d.package}:{d.synopsis}"
            if key not in descriptions or d.package < descriptions[key].package:
                descriptions[key] = d
    rows: dict[str, list[tuple[str, str, str]]] = {"train": [], "dev": [], "test": []}
    seen_sources: set[str] = set()
    dropped = {"no_long_description": 0, "length": 0, "duplicate_source": 0}
    for d in sorted(descriptions.values(), key=lambda d: (d.package, d.md5)):
        if not d.paragraphs:
            dropped["no_long_description"] += 1
            continue
        source = " ".join(d.paragraphs)
        if not SUMM_MIN_TOKENS <= len(source.split()) <= SUMM_MAX_TOKENS:
            dropped["length"] += 1
            continue
        if source in seen_sources:
            dropped["duplicate_source"] += 1
            continue
        seen_sources.add(source)
        rows[split_of(d.paragraphs[0])].append((source, d.synopsis, f"{d.package}:{d.md5}"))
    counts = _write_splits(out_dir, rows)
    stats: dict[str, object] = {
        "corpus": "debian-desc summarization (long description -> synopsis)",
        "index_files": [{"path": str(p), "sha256": hashlib.sha256(
            read_index(p).encode("utf-8")).hexdigest()} for p in files],
        "descriptions": len(descriptions), "pairs": counts, "dropped": dropped}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


# --------------------------------------------------------------------------- dialogue

SEPARATOR = "<sep>"


def chatterbot_conversations(language: str = "english") -> list[tuple[str, list[str]]]:
    """(file name, turns) for every conversation of chatterbot-corpus in ``language``."""
    try:
        import chatterbot_corpus
    except ImportError:
        raise CorpusBuildError("the chatterbot-corpus package is not installed: "
                               "pip install 'heedful[dialogue]'") from None
    import yaml

    folder = Path(chatterbot_corpus.__file__).parent / "data" / language
    if not folder.is_dir():
        raise CorpusBuildError(f"chatterbot-corpus has no language {language!r} "
                               f"(looked for {folder})")
    conversations = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for turns in data.get("conversations") or []:
            clean = [_clean(str(t)) for t in turns if t is not None and _clean(str(t))]
            if len(clean) >= 2:
                conversations.append((path.stem, clean))
    return conversations


def context_pairs(turns: Sequence[str], context_turns: int, separator: str = SEPARATOR
                  ) -> list[tuple[str, str]]:
    """Every turn after the first as a response to up to ``context_turns`` previous turns,
    joined (oldest first) with `` separator ``."""
    pairs = []
    for i in range(1, len(turns)):
        context = turns[max(0, i - context_turns) : i]
        pairs.append((f" {separator} ".join(context), turns[i]))
    return pairs


def build_chatterbot_pairs(out_dir: Path, context_turns: int = 2, language: str = "english",
                           separator: str = SEPARATOR) -> dict[str, object]:
    """context -> response pairs; whole conversations go to one split (hash of the first
    turn and file), so no held-out response was seen in training as part of a context."""
    if context_turns < 1:
        raise CorpusBuildError("--context-turns must be at least 1")
    rows: dict[str, list[tuple[str, str, str]]] = {"train": [], "dev": [], "test": []}
    conversations = chatterbot_conversations(language)
    for number, (name, turns) in enumerate(conversations):
        split = split_of(f"{name}:{turns[0]}", salt="chatterbot-split-v1:", test=0.1, dev=0.2)
        for k, (context, response) in enumerate(context_pairs(turns, context_turns, separator)):
            rows[split].append((context, response, f"{name}:{number}:{k + 1}"))
    counts = _write_splits(out_dir, rows)
    stats: dict[str, object] = {"corpus": f"chatterbot-corpus ({language})",
                                "conversations": len(conversations),
                                "context_turns": context_turns, "separator": separator,
                                "pairs": counts}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats
