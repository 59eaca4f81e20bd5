"""Reading corpora and cutting them into token-budget batches.

Readers accept two line-aligned text files, a TSV file, or a JSONL file; gzip is detected by
its magic bytes and read transparently. Normalisation (documented in docs/data.md): a UTF-8 BOM
at the start of a file is dropped, line endings ``\\n``, ``\\r\\n`` and a lone ``\\r`` all end a
line, and each segment is stripped of surrounding whitespace. Invalid UTF-8 stops with an error
that names the file and line.

Batches hold at most ``batch_tokens`` tokens counted as OpenNMT-py counts them: sentences x
the longest side (padding included). Pairs are sorted by length into batches once; the order
of batches is shuffled per epoch by a generator seeded with ``seed + epoch``, so the data
order is a pure function of (seed, epoch, position) and resumes exactly.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from heedful.config import DataConfig
from heedful.errors import DataError

# --------------------------------------------------------------------------- reading


def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a file") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip file ({err})") from None
    return raw


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (gzip allowed), without line endings.

    Raises:
        DataError: the file is missing, not valid UTF-8 (with the line number), or
            a corrupt gzip file.
    """
    path = Path(path)
    return decode_lines(_open_bytes(path), str(path))


def decode_lines(raw: bytes, name: str) -> list[str]:
    """UTF-8 bytes -> lines (BOM dropped, any line ending); errors name ``name`` and line."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{name}, line {line_no}: invalid UTF-8 (byte 0x{raw[err.start]:02x}); "
            "heedful reads UTF-8 text only"
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _clean(segment: str) -> str:
    # NUL and other C0 controls except tab would confuse SentencePiece and terminals
    return "".join(ch if ch >= " " or ch == "\t" else " " for ch in segment).strip()


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


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> Corpus:
    """Two line-aligned text files -> :class:`Corpus`."""
    src = read_lines(src_path)
    tgt = read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"source and target differ in length: {src_path} has {len(src)} lines, "
            f"{tgt_path} has {len(tgt)} lines"
        )
    return Corpus([_clean(s) for s in src], [_clean(t) for t in tgt], f"{src_path} + {tgt_path}")


def read_tsv(path: str | Path, src_field: str = "0", tgt_field: str = "1") -> Corpus:
    """A TSV file; ``src_field``/``tgt_field`` are column indices (as strings, 0-based)."""
    try:
        si, ti = int(src_field), int(tgt_field)
    except ValueError:
        raise DataError(
            f"{path}: for TSV, data.src_field and data.tgt_field must be column numbers "
            f"(got {src_field!r}, {tgt_field!r})"
        ) from None
    src, tgt = [], []
    for no, line in enumerate(read_lines(path), 1):
        cols = line.split("\t")
        if len(cols) <= max(si, ti):
            raise DataError(
                f"{path}, line {no}: expected at least {max(si, ti) + 1} tab-separated "
                f"columns, found {len(cols)}"
            )
        src.append(_clean(cols[si]))
        tgt.append(_clean(cols[ti]))
    return Corpus(src, tgt, str(path))


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
    src, tgt = [], []
    blank = 0
    for no, line in enumerate(read_lines(path), 1):
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
        for field in (src_field, tgt_field):
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
    return Corpus(src, tgt, str(path), skipped=blank)


def read_hf(dataset: str, split: str, src_field: str, tgt_field: str) -> Corpus:
    """A Hugging Face ``datasets`` split: a dataset saved with ``save_to_disk`` (a directory),
    a directory or file the ``load_dataset`` builders read (JSON, CSV, Parquet...), or a name
    on the Hub (needs network). Needs ``pip install 'heedful[hf]'``."""
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
    src, tgt = [], []
    for no, row in enumerate(loaded):
        pair = [field_value(row, f) for f in (src_field, tgt_field)]
        for field, value in zip((src_field, tgt_field), pair, strict=True):
            if not isinstance(value, str):
                what = "missing" if value is _MISSING else "not a string"
                raise DataError(f"{dataset} [{split}], row {no}: field {field!r} is {what} "
                                f"(has: {', '.join(map(str, row))})")
        src.append(_clean(pair[0]))
        tgt.append(_clean(pair[1]))
    return Corpus(src, tgt, f"{dataset} [{split}]")


def require_nonempty(corpus: Corpus, what: str) -> Corpus:
    if len(corpus) == 0:
        raise DataError(f"empty corpus: {what} ({corpus.origin}) has no segments")
    return corpus


# --------------------------------------------------------------------------- batching


@dataclass
class Batch:
    """A padded batch. Masks are bool with True = real token.

    src: (B, S); tgt_in / tgt_out: (B, T) (tgt_in starts with BOS, tgt_out ends with EOS).
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor
    num_tgt_tokens: int


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


def plan_batches(
    src_lens: Sequence[int], tgt_lens: Sequence[int], batch_tokens: int
) -> list[list[int]]:
    """Group example indices into batches of at most ``batch_tokens`` padded tokens.

    Examples are sorted by (target, source) length so padding stays small; a batch's cost is
    len(batch) x max(longest source, longest target + 1). An example longer than the budget
    gets a batch of its own.
    """
    order = sorted(range(len(src_lens)), key=lambda i: (tgt_lens[i], src_lens[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(src_lens[i], tgt_lens[i] + 1)
        new_longest = max(longest, size)
        if current and new_longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, new_longest = [], size
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def epoch_order(num_batches: int, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a pure function of (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_batches, generator=gen).tolist()


class BatchStream:
    """Endless stream of training batches with a resumable position (epoch, index)."""

    def __init__(
        self,
        src: list[list[int]],
        tgt: list[list[int]],
        batch_tokens: int,
        seed: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        self.src, self.tgt = src, tgt
        self.plan = plan_batches([len(s) for s in src], [len(t) for t in tgt], batch_tokens)
        self.seed = seed
        self.ids = (pad_id, bos_id, eos_id)
        self.epoch = 0
        self.index = 0
        self._order = epoch_order(len(self.plan), seed, 0)

    @property
    def completed_epochs(self) -> int:
        """Epochs fully consumed so far (the current one counts once its last batch is out)."""
        return self.epoch + (1 if self.index >= len(self._order) else 0)

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, epoch: int, index: int) -> None:
        self.epoch, self.index = epoch, index
        self._order = epoch_order(len(self.plan), self.seed, epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.index >= len(self._order):
            self.seek(self.epoch + 1, 0)
        members = self.plan[self._order[self.index]]
        self.index += 1
        pad_id, bos_id, eos_id = self.ids
        return make_batch(
            [self.src[i] for i in members], [self.tgt[i] for i in members], pad_id, bos_id,
            eos_id,
        )


# --------------------------------------------------------------------------- from config


def load_split(data_cfg: DataConfig, split: str) -> Corpus | None:
    """The corpus of ``split`` (train/dev/test) as the data config describes; None if absent."""
    from heedful.datasets import dataset_split

    if data_cfg.dataset is not None:
        try:
            src, tgt = dataset_split(data_cfg.dataset, split)
        except KeyError as err:
            raise DataError(f"data.dataset: {err.args[0]}") from None
        corpus = read_parallel(src, tgt)
    else:
        spec = getattr(data_cfg, split)
        if spec is None:
            return None
        if data_cfg.format == "text":
            corpus = read_parallel(spec.src, spec.tgt)
        elif data_cfg.format == "tsv":
            corpus = read_tsv(spec.path, data_cfg.src_field, data_cfg.tgt_field)
        elif data_cfg.format == "hf":
            assert data_cfg.hf_dataset is not None  # validated in config
            corpus = read_hf(data_cfg.hf_dataset, spec.split or split, data_cfg.src_field,
                             data_cfg.tgt_field)
        else:
            corpus = read_jsonl(spec.path, data_cfg.src_field, data_cfg.tgt_field)
    limit = data_cfg.train_limit if split == "train" else None
    if split == "dev":
        limit = data_cfg.dev_limit
    if limit is not None:
        corpus = Corpus(corpus.src[:limit], corpus.tgt[:limit], corpus.origin, corpus.skipped)
    return require_nonempty(corpus, f"the {split} split")
