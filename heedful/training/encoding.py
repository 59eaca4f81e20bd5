"""The work ``heedful prepare`` spreads over worker processes, one corpus chunk per task.

Three passes read the training split as :class:`~heedful.data.RawChunk` s (bytes; parsing is
the workers' job too): :func:`count_chunk` (which pairs have non-empty sides: how many lines
the tokenizer sample is drawn from), :func:`pick_chunk` (the sampled lines) and
:func:`encode_chunk` (token ids and lengths as NumPy arrays). :func:`run_ordered` runs a task
over the chunks in ``workers`` processes with only a few chunks in flight, so memory stays
bounded, and yields the results in input order; with one worker everything runs in this
process.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from heedful.data import RawChunk, parse_chunk
from heedful.tokenizer import EOS_ID, Tokenizer
from heedful.training.alignments import pair_links, word_start_table

T = TypeVar("T")
R = TypeVar("R")

_tokenizers: dict[str, Tokenizer] = {}  # per worker process: loaded once, by directory


def _tokenizer(directory: str) -> Tokenizer:
    if directory not in _tokenizers:
        _tokenizers.clear()
        _tokenizers[directory] = Tokenizer.load(Path(directory))
    return _tokenizers[directory]


def count_chunk(chunk: RawChunk) -> tuple[np.ndarray, np.ndarray, int]:
    """Per pair of the chunk, whether its source and its target are non-empty; and the
    chunk's blank lines (JSONL)."""
    seg = parse_chunk(chunk)
    return (np.fromiter(map(bool, seg.src), dtype=bool, count=len(seg.src)),
            np.fromiter(map(bool, seg.tgt), dtype=bool, count=len(seg.tgt)), seg.skipped)


@dataclass(frozen=True)
class Pick:
    """What :func:`pick_chunk` takes from a chunk: its first ``pairs`` pairs count, and of
    their non-empty sources / targets the ones at these positions (None: all)."""

    pairs: int
    src: np.ndarray | None
    tgt: np.ndarray | None


def pick_chunk(task: tuple[RawChunk, Pick]) -> tuple[list[str], list[str]]:
    """The sampled non-empty lines of a chunk, in order."""
    chunk, pick = task
    seg = parse_chunk(chunk)
    out = []
    for lines, wanted in ((seg.src[:pick.pairs], pick.src), (seg.tgt[:pick.pairs], pick.tgt)):
        nonempty = [line for line in lines if line]
        out.append(nonempty if wanted is None else [nonempty[i] for i in wanted.tolist()])
    return out[0], out[1]


@dataclass(frozen=True)
class Encoded:
    """A chunk's pairs encoded: per side the lengths and the ids end to end (sources end with
    EOS); ``skipped``: its blank lines (JSONL). With alignments, ``link_counts`` (per pair)
    and ``links`` (K, 2): the pairs' subword links end to end
    (:mod:`heedful.training.alignments`)."""

    src_lens: np.ndarray
    tgt_lens: np.ndarray
    src_ids: np.ndarray
    tgt_ids: np.ndarray
    skipped: int
    link_counts: np.ndarray | None = None
    links: np.ndarray | None = None
    unguided: int = 0
    """Pairs whose pieces did not fall into their words: trained without guidance."""

    def __len__(self) -> int:
        return len(self.src_lens)


@dataclass(frozen=True)
class LinkLines:
    """The alignment lines that go with a chunk: ``text`` (bytes), from ``name``, whose
    first line is line ``first_line``."""

    name: str
    first_line: int
    text: bytes


def encode_chunk(chunk: RawChunk | tuple[RawChunk, LinkLines], tokenizer_dir: str,
                 token_dtype: str) -> Encoded:
    """Parse and encode every pair of a chunk with the tokenizer in ``tokenizer_dir`` (and
    map the word links that come with it to subwords)."""
    chunk, link_lines = chunk if isinstance(chunk, tuple) else (chunk, None)
    tok = _tokenizer(tokenizer_dir)
    seg = parse_chunk(chunk)
    src_lens, src_ids, src_lists = _encode(tok.src, seg.src, token_dtype, eos=True)
    tgt_lens, tgt_ids, tgt_lists = _encode(tok.tgt, seg.tgt, token_dtype, eos=False)
    if link_lines is None:
        return Encoded(src_lens, tgt_lens, src_ids, tgt_ids, seg.skipped)
    starts = _word_starts(tokenizer_dir)
    lines = link_lines.text.decode("utf-8", errors="replace").split("\n")[:len(seg.src)]
    counts = np.zeros(len(seg.src), dtype=np.int64)
    found, unguided = [], 0
    for k, (line, s, t) in enumerate(zip(lines, seg.src, seg.tgt, strict=True)):
        links = pair_links(line, f"{link_lines.name}, line {link_lines.first_line + k}", s, t,
                           src_lists[k], tgt_lists[k], *starts)
        if links is None:
            unguided += 1
            continue
        counts[k] = len(links)
        found.append(links)
    flat = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int32)
    return Encoded(src_lens, tgt_lens, src_ids, tgt_ids, seg.skipped, counts, flat, unguided)


_starts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per worker process, as _tokenizers


def _word_starts(directory: str) -> tuple[np.ndarray, np.ndarray]:
    if directory not in _starts:
        _starts.clear()
        tok = _tokenizer(directory)
        _starts[directory] = (word_start_table(tok.src), word_start_table(tok.tgt))
    return _starts[directory]


def _encode(proc: Any, lines: list[str], dtype: str, eos: bool
            ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Lengths, ids end to end (with EOS after each source), and the ids per line (without
    EOS)."""
    # one thread per process: the workers are the parallelism (and the figures honest)
    ids = proc.encode(lines, num_threads=1)
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    if not eos:
        return lens, flat, ids
    lens = lens + 1
    out = np.empty(int(lens.sum()), dtype=dtype)
    is_eos = np.zeros(len(out), dtype=bool)
    is_eos[np.cumsum(lens) - 1] = True
    out[is_eos] = EOS_ID
    out[~is_eos] = flat
    return lens, out, ids


def run_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` processes (this one if 1), results in input
    order; at most two tasks per worker are in flight, so a corpus streamed in chunks is
    never held whole (``Pool.imap`` would read its input to the end at once)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # fork, as torch's DataLoader workers: nothing to re-import (spawn costs each worker
    # seconds of imports); the workers touch no torch state, thread or process group
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers) as pool:
        pending: deque[Any] = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def encoder(tokenizer_dir: Path, token_dtype: str
            ) -> Callable[[RawChunk | tuple[RawChunk, LinkLines]], Encoded]:
    """:func:`encode_chunk` with its tokenizer and dtype bound (picklable for the pool)."""
    return partial(encode_chunk, tokenizer_dir=str(tokenizer_dir), token_dtype=token_dtype)
