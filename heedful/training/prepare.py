"""The training data, ready for the batch stream: the tokenizer, the prepared store of the
encoded, length-filtered training pairs (:mod:`heedful.store`), and the dev corpus.

:func:`ensure_store` (``heedful prepare``, and ``heedful train`` before it trains) builds the
store when the run directory has none or its store is stale — built from other training files
(by sha256), another data section (source, fields, filters, ``train_limit``) or another
tokenizer — and leaves a current one alone. The build streams the training split in chunks,
never holding it whole: it counts the non-empty lines, draws the SentencePiece sample exactly as
``random.sample`` draws it from the whole corpus (:func:`heedful.tokenizer.sample_indices`),
trains the tokenizer, then encodes and filters the pairs in worker processes
(:mod:`heedful.training.encoding`) and writes them to the store.

Which tokenizer a build uses: the run directory's own once checkpoints depend on it (a resumed
run); else ``--init-from``'s; else the run directory's, unless the store's manifest says it was
trained here from inputs that have changed since (then it is trained again).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heedful.config import Config, DataConfig
from heedful.data import Corpus, RawChunk, load_split, split_chunks, split_files, split_origin
from heedful.errors import DataError
from heedful.lines import LineReader
from heedful.store import (
    StoreWriter,
    TokenStore,
    hash_files,
    open_store,
    read_manifest,
    remove_leftovers,
    store_path,
)
from heedful.tokenizer import SAMPLING_FIELDS, Tokenizer, sample_indices
from heedful.training.encoding import (
    Encoded,
    LinkLines,
    Pick,
    count_chunk,
    encoder,
    pick_chunk,
    run_ordered,
)
from heedful.vision.data import ImageStore

log = logging.getLogger("heedful.train")

SOURCE_FIELDS = ("dataset", "format", "hf_dataset", "train", "src_field", "tgt_field",
                 "train_limit")
"""The data options that decide which pairs are read (and the tokenizer trained on)."""
FILTER_FIELDS = ("max_src_len", "max_tgt_len", "max_len_ratio")
"""The length filters, applied to the encoded pairs."""


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns."""

    tokenizer: Tokenizer
    store: TokenStore | ImageStore
    """The encoded, length-filtered training pairs, memory-mapped (an image corpus: the
    images and target ids in memory)."""
    dev: Corpus | None
    """The dev corpus as text (None when the config names no dev split)."""
    filtered: int
    """Training pairs dropped: length filters, empty sides, blank JSONL lines."""
    built_because: str | None = None
    """Why this call (re)built the store; None when a current store was used as it was."""


def prepare_data(cfg: Config, run_dir: Path, tokenizer_from: Path | None = None,
                 workers: int = 1, check: bool = True) -> PreparedData:
    """The run directory's tokenizer, store and dev corpus, the store built first if it is
    missing or stale (:func:`ensure_store`). ``check=False`` opens the store as it is,
    without the staleness check or checksums (a DDP rank > 0, after rank 0 checked).
    Image and audio sources are read into memory instead
    (:func:`heedful.vision.data.prepare_image_data`)."""
    if cfg.data.source != "text":
        from heedful.sources import reader_for
        from heedful.vision.data import prepare_image_data

        # rank > 0 (check=False) loads the tokenizer rank 0 has just trained or kept
        tok, inputs, dev, dropped = prepare_image_data(cfg, run_dir, reader_for(cfg),
                                                       tokenizer_from, keep_tokenizer=not check)
        return PreparedData(tok, inputs, dev, dropped, built_because=(
            f"{cfg.data.source} corpora are read into memory for each run"))
    reason = ensure_store(cfg, run_dir, tokenizer_from, workers) if check else None
    # a store built just now was hashed as it was written: no need to read it back
    store = open_store(run_dir, verify=check and reason is None)
    counts = store.manifest["counts"]
    return PreparedData(Tokenizer.load(run_dir), store, load_split(cfg.data, "dev"),
                        counts["dropped"] + counts["skipped"], reason)


# --------------------------------------------------------------------------- staleness


def store_inputs(d: DataConfig) -> dict[str, Any]:
    """What a store is built from besides the tokenizer: the data options that matter and
    the training files (path, size, sha256). A Hugging Face dataset on disk counts as its
    files; one named on the Hub only by its name."""
    if split_origin(d, "train") is None:
        raise DataError("the config names no training split (data.train)")
    files = split_files(d, "train")
    if d.format == "hf" and d.dataset is None and d.hf_dataset and Path(d.hf_dataset).exists():
        root = Path(d.hf_dataset)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for f in files:
        if not f.is_file():
            raise DataError(f"file not found: {f}" if not f.exists()
                            else f"{f} is a directory, not a file")
    data = d.model_dump(mode="json", include=set(SOURCE_FIELDS + FILTER_FIELDS))
    if data.get("train"):  # not what the tokenizer is trained from: recorded on its own
        data["train"].pop("alignments", None)
    return {"data": data,
            "files": [{"path": str(f), "bytes": f.stat().st_size, "sha256": h}
                      for f, h in zip(files, hash_files(files), strict=True)],
            "alignments": _alignments_input(d)}


def _alignments_input(d: DataConfig) -> dict[str, Any] | None:
    """The alignments file (path, size, sha256), if the config names one."""
    if d.train is None or d.train.alignments is None:
        return None
    path = Path(d.train.alignments)
    if not path.is_file():
        raise DataError(f"data.train.alignments: file not found: {path}" if not path.exists()
                        else f"data.train.alignments: {path} is a directory, not a file")
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": hash_files([path])[0]}


def _tokenizer_hashes(directory: Path) -> dict[str, str]:
    files = Tokenizer.files(directory)
    return {f.name: h for f, h in zip(files, hash_files(files), strict=True)}


def _tokenizer_inputs(cfg: Config, inputs: dict[str, Any], sampled: bool) -> dict[str, Any]:
    """What a tokenizer trained here is trained from (the seed matters only if it sampled)."""
    source = {k: v for k, v in inputs["data"].items() if k in SOURCE_FIELDS}
    trained_by = cfg.tokenizer.model_dump(mode="json", exclude=set(SAMPLING_FIELDS))
    return {"tokenizer": trained_by, "data": source,
            "files": inputs["files"], "seed": cfg.train.seed if sampled else None}


def _has_checkpoints(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return root.is_dir() and any(p.name.startswith("step-") for p in root.iterdir())


def _tokenizer_plan(cfg: Config, run_dir: Path, tokenizer_from: Path | None,
                    manifest: dict[str, Any] | None, inputs: dict[str, Any]) -> str:
    """``keep`` the run directory's tokenizer, ``copy`` the one of ``tokenizer_from``, or
    ``train`` one (see the module docstring)."""
    have = bool(Tokenizer.files(run_dir))
    if have and _has_checkpoints(run_dir):
        return "keep"
    if tokenizer_from is not None:
        return "copy"
    if not have:
        return "train"
    recorded = (manifest or {}).get("tokenizer", {})
    if recorded.get("trained_from") is None or recorded["sha256"] != _tokenizer_hashes(run_dir):
        return "keep"  # not trained by a prepare (an older run), or put there since
    sampled = recorded["trained_from"]["seed"] is not None
    return "keep" if recorded["trained_from"] == _tokenizer_inputs(cfg, inputs, sampled) \
        else "train"


def _stale_reason(manifest: dict[str, Any] | None, inputs: dict[str, Any], plan: str,
                  expected_tokenizer: dict[str, str] | None) -> str | None:
    """Why the store must be (re)built, or None if it is current."""
    if manifest is None:
        return "the run directory has no prepared store yet"
    old = manifest["inputs"]
    if old["files"] != inputs["files"]:
        changed = [f["path"] for f in inputs["files"] if f not in old["files"]]
        return "the training files changed" + (f" ({', '.join(changed)})" if changed else "")
    diffs = [f"data.{k}: {old['data'].get(k)!r} -> {v!r}" for k, v in inputs["data"].items()
             if old["data"].get(k) != v]
    if diffs:
        return "the data section changed (" + "; ".join(diffs) + ")"
    if old.get("alignments") != inputs["alignments"]:
        return ("the alignments changed (data.train.alignments)" if inputs["alignments"]
                else "the store holds alignments the config no longer names")
    if plan == "train":
        return "the tokenizer section changed"
    if manifest["tokenizer"]["sha256"] != expected_tokenizer:
        return "the tokenizer changed"
    return None


def ensure_store(cfg: Config, run_dir: Path, tokenizer_from: Path | None = None,
                 workers: int = 1) -> str | None:
    """Build the run directory's store unless it is current; returns why it was built
    (None: it was current and is left as it is). Raises DataError for a corpus that cannot
    be read, and for a store manifest that cannot be read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(run_dir)
    inputs = store_inputs(cfg.data)
    manifest = read_manifest(run_dir)
    plan = _tokenizer_plan(cfg, run_dir, tokenizer_from, manifest, inputs)
    expected = (_tokenizer_hashes(run_dir) if plan == "keep"
                else _tokenizer_hashes(tokenizer_from) if tokenizer_from is not None else None)
    reason = _stale_reason(manifest, inputs, plan, expected)
    if reason is not None:
        log.info("preparing the training data into %s: %s", store_path(run_dir), reason)
        start = time.monotonic()
        kept = (manifest or {}).get("tokenizer", {})
        # a tokenizer kept as it was keeps the record of what it was trained from
        trained_from = (kept.get("trained_from") if plan == "keep" and expected == kept.get(
            "sha256") else None)
        counts = build_store(cfg, run_dir, inputs, plan, tokenizer_from, workers, trained_from)
        log.info("prepared %d training pairs (%d dropped) in %.1f s with %d worker(s)",
                 counts["kept"], counts["dropped"] + counts["skipped"],
                 time.monotonic() - start, workers)
    else:
        log.info("using the prepared store in %s (current)", store_path(run_dir))
    return reason


# --------------------------------------------------------------------------- building


def build_store(cfg: Config, run_dir: Path, inputs: dict[str, Any], plan: str,
                tokenizer_from: Path | None, workers: int,
                trained_from: dict[str, Any] | None = None) -> dict[str, int]:
    """Get the tokenizer as ``plan`` says, encode and filter the training split into a new
    store (replacing the old one only once complete); returns the pair counts.
    ``trained_from``: what a kept tokenizer was trained from, if a prepare trained it."""
    if plan == "copy":
        assert tokenizer_from is not None
        for f in Tokenizer.files(run_dir):  # a joint one must not shadow separate ones
            f.unlink()
        for f in Tokenizer.files(tokenizer_from):
            shutil.copy(f, run_dir / f.name)
    elif plan == "train":
        sampled = _train_tokenizer(cfg, run_dir, workers)
        trained_from = _tokenizer_inputs(cfg, inputs, sampled)
    tok = Tokenizer.load(run_dir)
    token_dtype = "uint16" if max(tok.src_vocab_size, tok.tgt_vocab_size) <= 1 << 16 \
        else "int32"
    d = cfg.data
    short = all(m is not None and m < 1 << 16 for m in (d.max_src_len, d.max_tgt_len))
    writer = StoreWriter(run_dir, token_dtype, "uint16" if short else "int32",
                         alignments=d.train is not None and d.train.alignments is not None)
    try:
        counts = _encode_into(writer, d, encoder(run_dir, token_dtype), workers)
        if counts["read"] == 0:
            raise DataError(f"empty corpus: the train split ({split_origin(d, 'train')}) has "
                            "no segments")
        if counts["kept"] == 0:
            raise DataError("no training pairs left after length filtering "
                            f"({split_origin(d, 'train')})")
        writer.commit({"inputs": inputs, "counts": counts, "workers": workers,
                       "tokenizer": {"sha256": _tokenizer_hashes(run_dir),
                                     "trained_from": trained_from}})
    except BaseException:
        writer.abort()
        raise
    return counts


def fits(src_lens: np.ndarray, tgt_lens: np.ndarray, d: DataConfig) -> np.ndarray:
    """Which encoded pairs pass the data section's length filters (source lengths count the
    EOS): not an empty side (it teaches nothing), within ``max_src_len`` / ``max_tgt_len``,
    and a length ratio (either way) within ``max_len_ratio``."""
    s, t = src_lens.astype(np.int64), tgt_lens.astype(np.int64)
    keep = (s > 1) & (t > 0)
    if d.max_src_len is not None:
        keep &= s <= d.max_src_len
    if d.max_tgt_len is not None:
        keep &= t <= d.max_tgt_len
    if d.max_len_ratio is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            keep &= np.maximum(s / t, t / s) <= d.max_len_ratio
    return keep


def _encode_into(writer: StoreWriter, d: DataConfig, encode: Any, workers: int
                 ) -> dict[str, int]:
    """Encode the training split chunk by chunk into ``writer``; the pair counts."""
    limit = d.train_limit
    counts = {"read": 0, "kept": 0, "dropped": 0, "skipped": 0}
    alignments = d.train.alignments if d.train is not None else None
    if alignments is not None:
        counts["unguided"] = 0
    enc: Encoded
    with _link_chunks(split_chunks(d, "train"), alignments, limit) as tasks:
        for enc in run_ordered(encode, tasks, workers):
            # the generator runs to its end even past the limit: it checks the line counts
            n = len(enc) if limit is None else max(0, min(len(enc), limit - counts["read"]))
            src_lens, tgt_lens = enc.src_lens[:n], enc.tgt_lens[:n]
            keep = fits(src_lens, tgt_lens, d)
            tokens = {side: ids[:int(lens.sum())][np.repeat(keep, lens)]
                      for side, ids, lens in (("src", enc.src_ids, src_lens),
                                              ("tgt", enc.tgt_ids, tgt_lens))}
            links = None
            if enc.link_counts is not None and enc.links is not None:
                link_counts = enc.link_counts[:n]
                links = (enc.links[:int(link_counts.sum())][np.repeat(keep, link_counts)],
                         link_counts[keep])
                counts["unguided"] += enc.unguided
            writer.append(tokens, {"src": src_lens[keep], "tgt": tgt_lens[keep]}, links)
            kept = int(keep.sum())
            counts["read"] += n
            counts["kept"] += kept
            counts["dropped"] += n - kept
            counts["skipped"] += enc.skipped
    return counts


@contextlib.contextmanager
def _link_chunks(chunks: Iterator[RawChunk], alignments: str | None, limit: int | None
                 ) -> Iterator[Iterator[RawChunk | tuple[RawChunk, LinkLines]]]:
    """The chunks, each with its lines of the alignments file if there is one; a file with
    fewer lines than the training split (or, without ``data.train_limit``, more) is a
    DataError naming it and the first line without a partner."""
    if alignments is None:
        yield chunks
        return
    with LineReader(alignments) as reader:

        def paired() -> Iterator[tuple[RawChunk, LinkLines]]:
            for chunk in chunks:
                lines = len(chunk.rows[0]) if chunk.rows is not None else \
                    chunk.src.count(b"\n")
                first = reader.lines_given + 1
                block = reader.take_lines(lines)
                if block.count(b"\n") < lines:
                    raise DataError(f"{alignments} has {reader.lines_given} lines, fewer than "
                                    f"the training split: line {reader.lines_given + 1} is "
                                    "missing (one line of links per training pair)")
                yield chunk, LinkLines(str(alignments), first, block)
            used = reader.lines_given
            if limit is None and reader.count_rest() > used:
                raise DataError(f"{alignments} has {reader.lines_given} lines, more than the "
                                f"training split's {used}: line {used + 1} has no training "
                                "pair (one line of links per training pair)")

        yield paired()


# --------------------------------------------------------------------------- the tokenizer


def _train_tokenizer(cfg: Config, run_dir: Path, workers: int) -> bool:
    """Train SentencePiece on the training split as :meth:`Tokenizer.train` would on the
    whole corpus, streaming it twice: count the non-empty lines, then pick the sample.
    Returns whether it sampled (rather than took every line)."""
    limit = cfg.data.train_limit
    per_chunk: list[tuple[int, int, int]] = []  # pairs used, non-empty sources, targets
    read = 0
    for src_ne, tgt_ne, _ in run_ordered(count_chunk, split_chunks(cfg.data, "train"),
                                         workers):
        n = len(src_ne) if limit is None else max(0, min(len(src_ne), limit - read))
        per_chunk.append((n, int(src_ne[:n].sum()), int(tgt_ne[:n].sum())))
        read += n
    if read == 0:
        raise DataError(f"empty corpus: the train split ({split_origin(cfg.data, 'train')}) "
                        "has no segments")
    tc, seed = cfg.tokenizer, cfg.train.seed
    num_src = sum(c[1] for c in per_chunk)
    num_tgt = sum(c[2] for c in per_chunk)
    log.info("training SentencePiece (%s, %d pieces, %s) on %d pairs", tc.type, tc.vocab_size,
             "joint" if tc.joint else "separate", read)
    if tc.joint:
        joint = sample_indices(num_src + num_tgt, tc, seed)
        sides = [_Side(joint, 0, num_src), _Side(joint, num_src, num_tgt)]
        size = num_src + num_tgt if joint is None else len(joint)
    else:
        sides = [_Side(sample_indices(num_src, tc, seed), 0, num_src),
                 _Side(sample_indices(num_tgt, tc, seed), 0, num_tgt)]
    tasks = _pick_tasks(split_chunks(cfg.data, "train"), per_chunk, sides)
    for src_lines, tgt_lines in run_ordered(pick_chunk, tasks, workers):
        sides[0].take(src_lines)
        sides[1].take(tgt_lines)
    if tc.joint:
        sample = [""] * size
        for side in sides:
            side.place(sample)
        Tokenizer.train_on_samples(sample, None, tc, run_dir)
    else:
        samples = [[""] * side.size for side in sides]
        for side, sample in zip(sides, samples, strict=True):
            side.place(sample)
        Tokenizer.train_on_samples(samples[0], samples[1], tc, run_dir)
    return any(side.picked is not None for side in sides)


class _Side:
    """One side's part of the tokenizer sample: ``picked`` (indices into the sample's line
    sequence, in sample order; None = every line) restricted to this side's lines, which
    are numbered from ``base`` on in that sequence (``count`` of them)."""

    def __init__(self, picked: list[int] | None, base: int, count: int) -> None:
        self.picked = picked
        self.got: list[str] = []
        self.wanted: np.ndarray | None
        self.slots: np.ndarray
        if picked is None:
            self.wanted, self.slots = None, np.arange(base, base + count)
        else:
            arr = np.asarray(picked, dtype=np.int64)
            slots = np.flatnonzero((arr >= base) & (arr < base + count))
            local = arr[slots] - base
            by_line = np.argsort(local, kind="stable")
            self.wanted, self.slots = local[by_line], slots[by_line]
        self.size = count if picked is None else len(picked)

    def in_chunk(self, start: int, count: int) -> np.ndarray | None:
        """The wanted lines among this side's lines start .. start + count - 1, numbered
        within them."""
        if self.wanted is None:
            return None
        lo, hi = np.searchsorted(self.wanted, [start, start + count])
        return self.wanted[lo:hi] - start

    def take(self, lines: list[str]) -> None:
        self.got += lines

    def place(self, sample: list[str]) -> None:
        """Put the lines taken (in line order) into their places in the sample."""
        for slot, line in zip(self.slots.tolist(), self.got, strict=True):
            sample[slot] = line


def _pick_tasks(chunks: Iterator[RawChunk], per_chunk: list[tuple[int, int, int]],
                sides: list[_Side]) -> Iterator[tuple[RawChunk, Pick]]:
    """Each chunk with what :func:`pick_chunk` takes from it."""
    src_start = tgt_start = 0
    for chunk, (pairs, num_src, num_tgt) in zip(chunks, per_chunk, strict=False):
        yield chunk, Pick(pairs, sides[0].in_chunk(src_start, num_src),
                          sides[1].in_chunk(tgt_start, num_tgt))
        src_start += num_src
        tgt_start += num_tgt
