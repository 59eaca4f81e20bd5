"""Reading corpora, whole or in chunks, and padding pairs into batches.

Readers accept two line-aligned text files, a TSV file, or a JSONL file; gzip is detected by
its magic bytes and read transparently. Normalisation (documented in docs/data.md): a UTF-8 BOM
at the start of a file is dropped, line endings ``\\n``, ``\\r\\n`` and a lone ``\\r`` all end a
line, C0 control characters other than tab become spaces, and each segment is stripped of
surrounding whitespace. Invalid UTF-8 stops with an error that names the file and line.

Every reader is built on one streaming path: :class:`heedful.lines.LineReader` hands out
blocks of whole, normalised lines as bytes; :func:`split_chunks` cuts a split into
:class:`RawChunk` s of consecutive pairs (the two files of a text corpus in step), and
:func:`parse_chunk` turns one into segments. ``heedful prepare`` parses and encodes chunks in
worker processes, so no corpus is ever held whole; :func:`load_split` (the dev and test
splits) collects them.

Batch planning and the training batch stream live in :mod:`heedful.batching`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from heedful.config import DataConfig
from heedful.errors import DataError
from heedful.lines import LineReader, decode_block, decode_lines, decode_text, read_lines

__all__ = ["Batch", "Corpus", "DataError", "RawChunk", "Segments", "decode_lines", "load_split",
           "make_batch", "pad", "parse_chunk", "read_jsonl", "read_lines", "read_parallel",
           "read_tsv", "split_chunks"]

CHUNK_BYTES = 1 << 20
"""About how many bytes of (source) text one :class:`RawChunk` holds (bible-es-en: ~7,000
pairs): what one ``heedful prepare`` worker parses and encodes at a time."""
# C0 controls except tab confuse SentencePiece and terminals: they become spaces
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f]")
_CONTROLS_IN_LINES = re.compile("[\x00-\x08\x0b-\x1f]")  # the same, \n separating lines


def _clean_lines(block: bytes, name: str, first_line: int) -> list[str]:
    """A block of whole lines -> its normalised segments (controls as spaces, stripped)."""
    text = _CONTROLS_IN_LINES.sub(" ", decode_text(block, name, first_line))
    return [line.strip() for line in text.split("\n")[:-1]]


def _clean(segment: str) -> str:
    return _CONTROLS.sub(" ", segment).strip()


def clean_segment(segment: str) -> str:
    """A segment normalised as the corpus readers normalise it (C0 controls other than tab
    as spaces, surrounding whitespace stripped)."""
    return _clean(segment)


@dataclass(frozen=True)
class Corpus:
    """Parallel segments, line-aligned. ``origin`` names where they came from."""

    src: list[str]
    tgt: list[str]
    origin: str
    skipped: int = 0
    """Input lines that held no pair (blank JSONL lines), reported to the user."""

    def __len__(self) -> int:
        return len(self.src)


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class RawChunk:
    """Consecutive input lines of one split, not yet decoded: what a worker parses.

    ``fmt`` is ``text`` (``src`` and ``tgt`` hold the same number of lines of the two
    files), ``tsv`` or ``jsonl`` (``src`` holds the lines), or ``rows`` (``rows``: segments
    already read, from a Hugging Face dataset). ``first_line`` (1-based) numbers the first
    line in error messages; ``src_field``/``tgt_field`` are the data config's.
    """

    fmt: str
    first_line: int
    src_name: str
    src: bytes = b""
    tgt_name: str = ""
    tgt: bytes = b""
    src_field: str = "src"
    tgt_field: str = "tgt"
    rows: tuple[list[str], list[str]] | None = None


@dataclass(frozen=True)
class Segments:
    """A parsed chunk: its pairs, and the input lines that held none (blank JSONL lines)."""

    src: list[str]
    tgt: list[str]
    skipped: int = 0


def parse_chunk(chunk: RawChunk) -> Segments:
    """Decode, check and normalise a chunk; errors name the file and line."""
    if chunk.rows is not None:
        return Segments(*chunk.rows)
    if chunk.fmt == "text":
        return Segments(_clean_lines(chunk.src, chunk.src_name, chunk.first_line),
                        _clean_lines(chunk.tgt, chunk.tgt_name, chunk.first_line))
    if chunk.fmt == "tsv":  # tabs survive the cleaning: clean whole lines, then cut
        return _parse_tsv(_clean_lines(chunk.src, chunk.src_name, chunk.first_line), chunk)
    return _parse_jsonl(decode_block(chunk.src, chunk.src_name, chunk.first_line), chunk)


def _parse_tsv(lines: list[str], chunk: RawChunk) -> Segments:
    si, ti = int(chunk.src_field), int(chunk.tgt_field)
    src, tgt = [], []
    for no, line in enumerate(lines, chunk.first_line):
        cols = line.split("\t")
        if len(cols) <= max(si, ti):
            raise DataError(
                f"{chunk.src_name}, line {no}: expected at least {max(si, ti) + 1} "
                f"tab-separated columns, found {len(cols)}"
            )
        src.append(cols[si].strip())
        tgt.append(cols[ti].strip())
    return Segments(src, tgt)


def _parse_jsonl(lines: list[str], chunk: RawChunk) -> Segments:
    src, tgt = [], []
    blank = 0
    path = chunk.src_name
    for no, line in enumerate(lines, chunk.first_line):
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {no}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {no}: expected a JSON object")
        pair = []
        for field in (chunk.src_field, chunk.tgt_field):
            value = field_value(obj, field)
            if value is _MISSING:
                raise DataError(
                    f"{path}, line {no}: missing field {field!r} "
                    f"(has: {', '.join(map(str, obj)) or 'nothing'})"
                )
            if not isinstance(value, str):
                raise DataError(f"{path}, line {no}: field {field!r} is not a string")
            pair.append(value)
        src.append(_clean(pair[0]))
        tgt.append(_clean(pair[1]))
    return Segments(src, tgt, blank)


def _first_lines(block: bytes, count: int) -> bytes:
    """The first ``count`` lines of a block of whole lines."""
    pieces = block.split(b"\n", count)
    return block if len(pieces) <= count else block[: len(block) - len(pieces[count])]


def text_chunks(src_path: str | Path, tgt_path: str | Path, chunk_bytes: int = CHUNK_BYTES,
                limit: int | None = None) -> Iterator[RawChunk]:
    """Chunks of two line-aligned text files (the first ``limit`` lines only, if given).
    Both files are read to the end even so: different line counts are a
    :class:`DataError` naming both files and counts."""
    with LineReader(src_path) as src, LineReader(tgt_path) as tgt:
        while limit is None or src.lines_given < limit:
            first = src.lines_given + 1
            block = src.take(chunk_bytes)
            if not block:
                break
            if limit is not None and src.lines_given > limit:
                block = _first_lines(block, limit - first + 1)
            lines = block.count(b"\n")
            tgt_block = tgt.take_lines(lines)
            if tgt_block.count(b"\n") < lines:
                break
            yield RawChunk("text", first, src.name, block, tgt.name, tgt_block)
        num_src, num_tgt = src.count_rest(), tgt.count_rest()
    if num_src != num_tgt:
        raise DataError(
            f"source and target differ in length: {src_path} has {num_src} lines, "
            f"{tgt_path} has {num_tgt} lines"
        )


def line_chunks(path: str | Path, fmt: str, src_field: str, tgt_field: str,
                chunk_bytes: int = CHUNK_BYTES, limit: int | None = None
                ) -> Iterator[RawChunk]:
    """Chunks of a TSV or JSONL file (at most ``limit`` lines: a JSONL file may hold blank
    ones, so its consumer cuts the pairs itself)."""
    if fmt == "tsv":
        _check_tsv_columns(path, src_field, tgt_field)
    with LineReader(path) as reader:
        while limit is None or reader.lines_given < limit:
            first = reader.lines_given + 1
            block = reader.take(chunk_bytes)
            if not block:
                return
            if limit is not None and reader.lines_given > limit:
                block = _first_lines(block, limit - first + 1)
            yield RawChunk(fmt, first, reader.name, block, src_field=src_field,
                           tgt_field=tgt_field)


def _check_tsv_columns(path: str | Path, src_field: str, tgt_field: str) -> None:
    try:
        int(src_field), int(tgt_field)
    except ValueError:
        raise DataError(
            f"{path}: for TSV, data.src_field and data.tgt_field must be column numbers "
            f"(got {src_field!r}, {tgt_field!r})"
        ) from None


def collect(chunks: Iterator[RawChunk], origin: str) -> Corpus:
    """Parse every chunk into one :class:`Corpus`."""
    src: list[str] = []
    tgt: list[str] = []
    skipped = 0
    for chunk in chunks:
        seg = parse_chunk(chunk)
        src += seg.src
        tgt += seg.tgt
        skipped += seg.skipped
    return Corpus(src, tgt, origin, skipped)


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> Corpus:
    """Two line-aligned text files -> :class:`Corpus`."""
    return collect(text_chunks(src_path, tgt_path), f"{src_path} + {tgt_path}")


def read_tsv(path: str | Path, src_field: str = "0", tgt_field: str = "1") -> Corpus:
    """A TSV file; ``src_field``/``tgt_field`` are column indices (as strings, 0-based)."""
    return collect(line_chunks(path, "tsv", src_field, tgt_field), str(path))


_MISSING = object()


def field_value(obj: Any, field: str) -> Any:
    """``obj[field]``, where a dotted field walks nested objects: ``translation.de`` is
    ``obj["translation"]["de"]`` (the layout of many Hugging Face translation sets)."""
    if isinstance(obj, dict) and field in obj:
        return obj[field]
    for part in field.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def read_jsonl(path: str | Path, src_field: str = "src", tgt_field: str = "tgt") -> Corpus:
    """A JSONL file with one object per line holding ``src_field`` and ``tgt_field`` (dotted
    names reach into nested objects)."""
    return collect(line_chunks(path, "jsonl", src_field, tgt_field), str(path))


def hf_chunks(dataset: str, split: str, src_field: str, tgt_field: str,
              rows_per_chunk: int = 20_000) -> Iterator[RawChunk]:
    """A Hugging Face ``datasets`` split in chunks of rows: a dataset saved with
    ``save_to_disk`` (a directory), a directory or file the ``load_dataset`` builders read
    (JSON, CSV, Parquet...), or a name on the Hub (needs network). Needs
    ``pip install 'heedful[hf]'``."""
    loaded = _load_hf(dataset, split)
    src: list[str] = []
    tgt: list[str] = []
    origin = f"{dataset} [{split}]"
    for no, row in enumerate(loaded):
        pair = [field_value(row, f) for f in (src_field, tgt_field)]
        for field, value in zip((src_field, tgt_field), pair, strict=True):
            if not isinstance(value, str):
                what = "missing" if value is _MISSING else "not a string"
                raise DataError(f"{origin}, row {no}: field {field!r} is {what} "
                                f"(has: {', '.join(map(str, row))})")
        src.append(_clean(pair[0]))
        tgt.append(_clean(pair[1]))
        if len(src) == rows_per_chunk:
            yield RawChunk("rows", no + 2 - len(src), origin, rows=(src, tgt))
            src, tgt = [], []
    if src:
        yield RawChunk("rows", 0, origin, rows=(src, tgt))


def _load_hf(dataset: str, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("data.format: hf needs the datasets package: "
                        "pip install 'heedful[hf]'") from None
    where = Path(dataset)
    try:
        if (where / "dataset_dict.json").exists() or (where / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(str(where))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{dataset}: no split {split!r} (has: "
                                    f"{', '.join(loaded)})")
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(dataset, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        raise DataError(f"data.hf_dataset {dataset!r}, split {split!r}: {err}") from None
    return loaded


def read_hf(dataset: str, split: str, src_field: str, tgt_field: str) -> Corpus:
    """A Hugging Face ``datasets`` split as one :class:`Corpus` (see :func:`hf_chunks`)."""
    return collect(hf_chunks(dataset, split, src_field, tgt_field), f"{dataset} [{split}]")


def require_nonempty(corpus: Corpus, what: str) -> Corpus:
    if len(corpus) == 0:
        raise DataError(f"empty corpus: {what} ({corpus.origin}) has no segments")
    return corpus


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """A padded batch. Masks are bool with True = real token.

    src: (B, S); tgt_in / tgt_out: (B, T) (tgt_in starts with BOS, tgt_out ends with EOS);
    ``align``: for guided alignment, the subword links (K, 3) int64 rows (batch row, target
    position t — the step that predicts tgt_out[t] —, source position), or None.
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor
    num_tgt_tokens: int
    align: torch.Tensor | None = None


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to (B, max_len); returns (ids, mask)."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, ids != pad_id


def make_batch(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], pad_id: int, bos_id: int,
    eos_id: int,
) -> Batch:
    """Source ids already end with EOS; target ids are bare (BOS/EOS added here)."""
    src_ids, src_mask = pad(src, pad_id)
    tgt_in, _ = pad([[bos_id, *t] for t in tgt], pad_id)
    tgt_out, tgt_mask = pad([[*t, eos_id] for t in tgt], pad_id)
    return Batch(src_ids, src_mask, tgt_in, tgt_out, tgt_mask, int(tgt_mask.sum()))


# --------------------------------------------------------------------------- from config


def split_origin(data_cfg: DataConfig, split: str) -> str | None:
    """Where ``split`` comes from, as error messages name it; None if the config has none."""
    from heedful.datasets import dataset_split

    if data_cfg.dataset is not None:
        try:
            src, tgt = dataset_split(data_cfg.dataset, split)
        except KeyError as err:
            raise DataError(f"data.dataset: {err.args[0]}") from None
        return f"{src} + {tgt}"
    spec = getattr(data_cfg, split)
    if spec is None:
        return None
    if data_cfg.format == "text":
        return f"{spec.src} + {spec.tgt}"
    if data_cfg.format == "hf":
        return f"{data_cfg.hf_dataset} [{spec.split or split}]"
    return str(spec.path)


def split_files(data_cfg: DataConfig, split: str) -> list[Path]:
    """The files ``split`` is read from ([] for a Hugging Face dataset)."""
    from heedful.datasets import dataset_split

    if data_cfg.dataset is not None:
        return list(dataset_split(data_cfg.dataset, split))
    spec = getattr(data_cfg, split)
    if spec is None or data_cfg.format == "hf":
        return []
    if data_cfg.format == "text":
        return [Path(spec.src), Path(spec.tgt)]
    return [Path(spec.path)]


def split_chunks(data_cfg: DataConfig, split: str, chunk_bytes: int | None = None
                 ) -> Iterator[RawChunk]:
    """The chunks of ``split`` (train/dev/test) as the data config describes it, of about
    ``chunk_bytes`` (default ``CHUNK_BYTES``), cut at ``data.train_limit`` / ``dev_limit``
    lines (a JSONL split's consumer cuts its pairs)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    limit = {"train": data_cfg.train_limit, "dev": data_cfg.dev_limit}.get(split)
    if data_cfg.dataset is not None or data_cfg.format == "text":
        src, tgt = split_files(data_cfg, split)
        return text_chunks(src, tgt, chunk_bytes, limit)
    spec = getattr(data_cfg, split)
    if data_cfg.format == "hf":
        assert data_cfg.hf_dataset is not None  # validated in config
        return hf_chunks(data_cfg.hf_dataset, spec.split or split, data_cfg.src_field,
                         data_cfg.tgt_field)
    return line_chunks(spec.path, data_cfg.format, data_cfg.src_field, data_cfg.tgt_field,
                       chunk_bytes, limit)


def load_split(data_cfg: DataConfig, split: str) -> Corpus | None:
    """The corpus of ``split`` (train/dev/test) as the data config describes; None if absent."""
    origin = split_origin(data_cfg, split)
    if origin is None:
        return None
    corpus = collect(split_chunks(data_cfg, split), origin)
    limit = {"train": data_cfg.train_limit, "dev": data_cfg.dev_limit}.get(split)
    if limit is not None:
        corpus = Corpus(corpus.src[:limit], corpus.tgt[:limit], corpus.origin, corpus.skipped)
    return require_nonempty(corpus, f"the {split} split")
