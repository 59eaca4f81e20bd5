"""Word alignments from attention, and their quality (AER, precision, recall).

Words are exactly ``line.split(" ")`` of the plain text (punctuation stays attached: "tierra,"
is one word), as the bible-es-en gold files define them. Each word is encoded with
SentencePiece on its own, so every subword belongs to exactly one word by construction (with
SentencePiece's default whitespace splitting this gives the same pieces as encoding the line).

Subword attention (T_pieces, S_pieces) becomes word attention (T_words, S_words) by *summing*
over a source word's pieces (attention mass on the word) and *averaging* over a target word's
pieces (each piece is one decoding step). Links are then extracted from the word matrix:

* ``argmax``: each target word links to the source word it attends to most;
* ``source-argmax``: each source word links to the target word that attends to it most;
* ``intersect``: links that both of the above agree on (high precision);
* ``threshold``: every pair whose weight reaches ``threshold``.

``shift`` picks which decoding step's attention stands for a target word: 0 = the step that
*predicts* it (natural for RNNs), 1 = the step that *reads* it as input (often better for
Transformers, cf. Chen et al. 2020 "shift-att").

Alignment error rate (Och & Ney 2003), with sure links S ⊆ possible links P and predicted A:

    precision = |A ∩ P| / |A|,  recall = |A ∩ S| / |S|,
    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)

Because the bible-es-en gold is partial (only words with a Strong's number are annotated),
:func:`alignment_scores` also reports a *restricted* variant: A is first cut to the links
whose source word and whose target word each appear in at least one link of P; recall is
still measured against all of S.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heedful.data import DataError, read_lines

Link = tuple[int, int]  # (source word index, target word index), 0-based
METHODS = ("argmax", "source-argmax", "intersect", "threshold")


# ----------------------------------------------------------------------------- files


def parse_links(line: str, where: str = "<alignment>") -> set[Link]:
    """``"0-1 2-3"`` -> {(0, 1), (2, 3)}; ``where`` names the file and line in errors."""
    links = set()
    for item in line.split():
        left, sep, right = item.partition("-")
        if not sep or not left.isdigit() or not right.isdigit():
            raise DataError(f"{where}: {item!r} is not a link 'i-j' (0-based source-target "
                            "word indices, Pharaoh format)")
        links.add((int(left), int(right)))
    return links


def read_alignments(path: str | Path) -> list[set[Link]]:
    """One set of links per line of a Pharaoh-format file (``i-j`` pairs, 0-based)."""
    return [parse_links(line, f"{path}, line {n}") for n, line in
            enumerate(read_lines(path), 1)]


def format_links(links: Iterable[Link]) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


_NEIGHBOURS = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def grow_diag_final_and(forward: set[Link], reverse: set[Link]) -> set[Link]:
    """Koehn's grow-diag-final-and symmetrization of two directional alignments (Moses'
    default): start from their intersection, add union links next to a link that align a
    still unaligned word, then union links whose words are both unaligned."""
    links, union = forward & reverse, forward | reverse
    grown = True
    while grown:  # grow-diag: add union neighbours that align a still-unaligned word
        grown = False
        for i, j in sorted(links):
            for di, dj in _NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in links and (
                        p[0] not in {a for a, _ in links} or p[1] not in {b for _, b in links}):
                    links.add(p)
                    grown = True
    for p in sorted(union):  # final-and: union links whose words are both unaligned
        if p not in links and p[0] not in {a for a, _ in links} and \
                p[1] not in {b for _, b in links}:
            links.add(p)
    return links


# ----------------------------------------------------------------------------- words


def words(line: str) -> list[str]:
    """The gold files' words: the line split on single spaces (punctuation attached)."""
    return line.split(" ") if line else []


def encode_words(proc: object, line: str) -> tuple[list[int], list[int]]:
    """Encode ``line`` word by word: (piece ids, word index of each piece)."""
    ids: list[int] = []
    owner: list[int] = []
    ws = words(line)
    for index, piece_ids in enumerate(proc.encode(ws) if ws else []):  # type: ignore[attr-defined]
        ids.extend(piece_ids)
        owner.extend([index] * len(piece_ids))
    return ids, owner


def word_matrix(attention: np.ndarray, src_owner: Sequence[int], tgt_owner: Sequence[int],
                num_src_words: int, num_tgt_words: int, shift: int = 0) -> np.ndarray:
    """Subword attention -> word attention.

    attention: (T_steps, S_pieces) over the decoder steps (T_steps >= len(tgt_owner) + shift)
    and source pieces (extra columns such as the source EOS are ignored). Returns
    (num_tgt_words, num_src_words): mean over a target word's pieces of the summed weight on
    each source word's pieces.
    """
    attention = np.asarray(attention, dtype=np.float64)
    t_pieces, s_pieces = len(tgt_owner), len(src_owner)
    if attention.shape[0] < t_pieces + shift or attention.shape[1] < s_pieces:
        raise ValueError(f"attention {attention.shape} is too small for {t_pieces} target "
                         f"pieces (shift {shift}) and {s_pieces} source pieces")
    rows = attention[shift : shift + t_pieces, :s_pieces]
    src_sum = np.zeros((t_pieces, num_src_words))
    np.add.at(src_sum.T, np.asarray(src_owner, dtype=np.int64), rows.T)
    out = np.zeros((num_tgt_words, num_src_words))
    counts = np.zeros(num_tgt_words)
    np.add.at(out, np.asarray(tgt_owner, dtype=np.int64), src_sum)
    np.add.at(counts, np.asarray(tgt_owner, dtype=np.int64), 1.0)
    return out / np.maximum(counts, 1.0)[:, None]


def extract_links(matrix: np.ndarray, method: str = "argmax",
                  threshold: float = 0.3) -> set[Link]:
    """Links (source, target) from a word matrix (T_words, S_words); see the module doc."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; choose from {', '.join(METHODS)}")
    t, s = matrix.shape
    if t == 0 or s == 0:
        return set()
    by_target = {(int(matrix[j].argmax()), j) for j in range(t)}
    if method == "argmax":
        return by_target
    by_source = {(i, int(matrix[:, i].argmax())) for i in range(s)}
    if method == "source-argmax":
        return by_source
    if method == "intersect":
        return by_target & by_source
    return {(int(i), int(j)) for j, i in zip(*np.nonzero(matrix >= threshold), strict=True)}


# ----------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class AlignmentScores:
    """AER, precision and recall over all predicted links and over the restricted set."""

    aer: float
    precision: float
    recall: float
    aer_restricted: float
    precision_restricted: float
    predicted_links: int
    predicted_links_restricted: int
    sure_links: int
    sentences: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _aer(a: int, a_s: int, a_p: int, s: int) -> tuple[float, float]:
    precision = a_p / a if a else 0.0
    aer = 1.0 - (a_s + a_p) / (a + s) if a + s else 0.0
    return aer, precision


def alignment_scores(predicted: Sequence[set[Link]], sure: Sequence[set[Link]],
                     possible: Sequence[set[Link]] | None = None) -> AlignmentScores:
    """Corpus-level AER/precision/recall (sums over sentences, as Och & Ney define them).

    ``possible`` defaults to ``sure``; sure links always count as possible.
    """
    possible = possible if possible is not None else sure
    if not len(predicted) == len(sure) == len(possible):
        raise ValueError(f"{len(predicted)} predicted alignments for {len(sure)} sure and "
                         f"{len(possible)} possible gold lines")
    a = a_s = a_p = s = 0
    ra = ra_s = ra_p = 0
    for pred, gold_s, gold_p in zip(predicted, sure, possible, strict=True):
        gold_p = gold_p | gold_s
        a += len(pred)
        a_s += len(pred & gold_s)
        a_p += len(pred & gold_p)
        s += len(gold_s)
        src_words = {i for i, _ in gold_p}
        tgt_words = {j for _, j in gold_p}
        kept = {(i, j) for i, j in pred if i in src_words and j in tgt_words}
        ra += len(kept)
        ra_s += len(kept & gold_s)
        ra_p += len(kept & gold_p)
    aer, precision = _aer(a, a_s, a_p, s)
    raer, rprecision = _aer(ra, ra_s, ra_p, s)
    return AlignmentScores(
        aer=round(aer, 4), precision=round(precision, 4), recall=round(a_s / s if s else 0.0, 4),
        aer_restricted=round(raer, 4), precision_restricted=round(rprecision, 4),
        predicted_links=a, predicted_links_restricted=ra, sure_links=s, sentences=len(predicted))
