"""Guided alignment's data: the word links of the training pairs mapped to their subwords.

``data.train.alignments`` holds one Pharaoh line per input line of the training split
(``i-j``: source word i, target word j, 0-based; words are the whitespace-split line, as
eflomal and fast_align split it). ``heedful prepare`` reads it beside the corpus, chunk for
chunk, and its workers map each pair's word links to subword links: a word link i-j links
every piece of source word i to every piece of target word j. Which word a piece belongs to
comes from the pieces of the line encoded whole: with SentencePiece's whitespace splitting
(the default) a piece that starts with ``▁`` starts a word, so a piece's word is the number
of word-starting pieces up to it, minus one.

Per pair the store keeps the subword links as (source piece, target piece) rows; the target
piece t is the one the decoder predicts at step t, whose attention row the guided loss
supervises (:func:`heedful.nn.loss.guided_alignment_sum`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from heedful.analysis.word_alignment import parse_links
from heedful.errors import DataError

WORD_START = "\u2581"  # SentencePiece's whitespace marker


def word_start_table(proc: Any) -> np.ndarray:
    """For every piece id of a SentencePiece model: whether the piece starts a word."""
    return np.fromiter((proc.id_to_piece(i).startswith(WORD_START)
                        for i in range(proc.get_piece_size())), dtype=bool,
                       count=proc.get_piece_size())


def piece_words(ids: Sequence[int], starts: np.ndarray) -> np.ndarray:
    """The word index of each piece of an encoded line (a first piece that does not start a
    word still belongs to word 0)."""
    owner = np.cumsum(starts[np.asarray(ids, dtype=np.int64)]) - 1
    return np.maximum(owner, 0)


def subword_links(word_links: set[tuple[int, int]], src_words: np.ndarray,
                  tgt_words: np.ndarray) -> np.ndarray:
    """Word links -> (source piece, target piece) links, sorted by target then source piece.

    ``src_words`` / ``tgt_words``: the word of each piece (:func:`piece_words`). Returns an
    int32 array (K, 2)."""
    if not word_links:
        return np.zeros((0, 2), dtype=np.int32)
    src_of = _pieces_by_word(src_words)
    tgt_of = _pieces_by_word(tgt_words)
    rows = [(s, t) for i, j in word_links for t in tgt_of[j] for s in src_of[i]]
    out = np.array(sorted(rows, key=lambda st: (st[1], st[0])), dtype=np.int32)
    return out.reshape(-1, 2)


def _pieces_by_word(owner: np.ndarray) -> list[list[int]]:
    words: list[list[int]] = [[] for _ in range(int(owner[-1]) + 1 if len(owner) else 0)]
    for piece, word in enumerate(owner.tolist()):
        words[word].append(piece)
    return words


def pair_links(line: str, where: str, src_line: str, tgt_line: str, src_ids: Sequence[int],
               tgt_ids: Sequence[int], src_starts: np.ndarray, tgt_starts: np.ndarray
               ) -> np.ndarray | None:
    """One pair's subword links from its Pharaoh ``line`` (``where``: file and line, for
    errors); None where the pieces do not fall into the line's words (a normalisation that
    joined or split words: the pair is trained without guidance)."""
    links = parse_links(line, where)
    num_src, num_tgt = len(src_line.split()), len(tgt_line.split())
    for i, j in sorted(links):
        if i >= num_src or j >= num_tgt:
            raise DataError(f"{where}: link {i}-{j} is out of range: the pair's source has "
                            f"{num_src} words, its target {num_tgt}")
    src_words, tgt_words = piece_words(src_ids, src_starts), piece_words(tgt_ids, tgt_starts)
    if _count_words(src_words) != num_src or _count_words(tgt_words) != num_tgt:
        return None
    return subword_links(links, src_words, tgt_words)


def _count_words(owner: np.ndarray) -> int:
    return int(owner[-1]) + 1 if len(owner) else 0
