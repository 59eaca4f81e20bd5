"""Subword regularization: a fresh segmentation of every training pair each time it is drawn.

Kudo (2018) samples unigram segmentations from the model's lattice (smoothed by ``alpha``,
over the ``nbest`` best or all of them); Provilkov et al. (2020) drop each BPE merge with
probability ``alpha`` (BPE-dropout). SentencePiece does both (``enable_sampling``); heedful
turns it on with ``tokenizer.sampling_alpha`` (and ``tokenizer.sampling_nbest``), for
training batches only — validation, translation and serving always segment the one best way.

The prepared store keeps each pair's deterministic ids; a batch's pairs are decoded back to
their (normalised) text and encoded again with sampling on the thread that assembles
batches. SentencePiece's generator is seeded before each batch with a pure function of
(``train.seed``, epoch, batch index), so a batch has the same segmentation whenever it is
drawn, and a resumed run continues exactly.

A sampled segmentation is longer than the best one; a pair whose sample would exceed
``data.max_src_len`` / ``data.max_tgt_len`` keeps its deterministic ids, so no pair outgrows
the limits it was admitted under.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

from heedful.tokenizer import EOS_ID, Tokenizer, TokenizerConfig


class SubwordSampler:
    """Re-segments a batch's pairs with SentencePiece's sampling.

    ``__call__(src_rows, tgt_rows, seed)``: the rows as the store holds them (a source row
    ends with EOS, a target row is bare) -> new id lists of the same shape conventions.
    NumPy and SentencePiece only: no torch op, so it can run on the prefetching thread
    without starting a second OpenMP team.
    """

    def __init__(self, tokenizer: Tokenizer, alpha: float, nbest: int,
                 max_src_len: int | None, max_tgt_len: int | None) -> None:
        self.tokenizer = tokenizer
        self.alpha, self.nbest = alpha, nbest
        self.max_src_len, self.max_tgt_len = max_src_len, max_tgt_len

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, tokenizer: Tokenizer,
                    max_src_len: int | None, max_tgt_len: int | None) -> SubwordSampler | None:
        """The sampler the ``tokenizer`` section asks for, or None when sampling is off."""
        if cfg.sampling_alpha is None:
            return None
        return cls(tokenizer, cfg.sampling_alpha, cfg.sampling_nbest, max_src_len, max_tgt_len)

    def __call__(self, src_rows: Sequence[np.ndarray], tgt_rows: Sequence[np.ndarray],
                 seed: int) -> tuple[list[list[int]], list[list[int]]]:
        spm.set_random_generator_seed(seed)  # global to the process; only this thread samples
        src = self._resample(self.tokenizer.src, [r[:-1] for r in src_rows], self.max_src_len,
                             eos=True)
        tgt = self._resample(self.tokenizer.tgt, list(tgt_rows), self.max_tgt_len, eos=False)
        return src, tgt

    def _resample(self, proc: spm.SentencePieceProcessor, rows: list[np.ndarray],
                  limit: int | None, eos: bool) -> list[list[int]]:
        texts = proc.decode([r.tolist() for r in rows])
        sampled = proc.encode(texts, enable_sampling=True, alpha=self.alpha,
                              nbest_size=self.nbest, num_threads=1)
        out = []
        for row, ids in zip(rows, sampled, strict=True):
            keep = limit is None or len(ids) + eos <= limit
            seq = list(ids) if keep else row.tolist()
            out.append([*seq, EOS_ID] if eos else seq)
        return out
