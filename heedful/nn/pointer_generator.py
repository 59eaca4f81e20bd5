"""The copy mechanism: a pointer-generator (See et al. 2017, "Get To The Point").

At every target step the model mixes two distributions with a learned switch p_gen:

    P(w) = p_gen * P_vocab(w) + (1 - p_gen) * sum_{i : x_i = w} a_i

where a is the decoder's attention over source positions (heads averaged), so probability
mass can go straight to a source token, e.g. a package name the vocabulary splits badly or
lacks entirely. p_gen = sigmoid(w [h~_t; x_t] + b) from the attentional state h~_t (itself a
function of the decoder state and the context vector, as in OpenNMT-py's copy generator) and
the decoder input x_t.

The extended vocabulary. Source tokens are SentencePiece ids of the *source* vocabulary;
``src_to_tgt`` maps each to the same piece in the target vocabulary, or -1 where the target
vocabulary lacks it (possible with separate vocabularies). Within a batch the missing source
ids get extra ids V, V+1, ... (one per distinct source id, shared by the batch), so the output
distribution has V + num_extra entries and copying an out-of-vocabulary piece is an ordinary
token id. :func:`extended_text` turns such ids back into text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from heedful.runtime.gemm import Linear
from heedful.tokenizer import EOS_ID, Tokenizer

PROB_FLOOR = 1e-20
"""Probabilities are floored here before the log, so log(0) never reaches the loss."""


def extend_source(src: Tensor, src_to_tgt: Tensor, tgt_vocab_size: int
                  ) -> tuple[Tensor, Tensor]:
    """Source ids (B, S) -> their ids in the extended target vocabulary (B, S), and the
    source ids that got extra ids (num_extra,), sorted: extra id V + k is oov_src_ids[k]."""
    mapped = src_to_tgt[src]
    missing = mapped < 0
    oov_src_ids = torch.unique(src[missing])  # sorted
    if oov_src_ids.numel():
        extra = tgt_vocab_size + torch.searchsorted(oov_src_ids, src)
        mapped = torch.where(missing, extra, mapped)
    return mapped, oov_src_ids


class PointerGenerator(nn.Module):
    """The switch p_gen and the mixture of the two distributions."""

    def __init__(self, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.switch = Linear(hidden_dim + embed_dim, 1)

    def forward(self, logits: Tensor, hidden: Tensor, emb: Tensor, attention: Tensor,
                copy_ids: Tensor, num_extra: int) -> Tensor:
        """Final log-probabilities (B, T, V + num_extra).

        logits: (B, T, V) the generator's scores; hidden: (B, T, H) attentional states;
        emb: (B, T, E) decoder inputs; attention: (B, T, S) weights over source positions
        (zero on padding); copy_ids: (B, S) source ids in the extended vocabulary.
        Because the result is a log-distribution, log_softmax leaves it unchanged: the loss
        and every search treat it like logits.
        """
        p_gen = torch.sigmoid(self.switch(torch.cat([hidden, emb], -1)).float())  # (B, T, 1)
        vocab = torch.softmax(logits.float(), -1) * p_gen
        if num_extra:
            vocab = torch.cat([vocab, vocab.new_zeros(*vocab.shape[:2], num_extra)], -1)
        copy = attention.float() * (1 - p_gen)  # (B, T, S)
        index = copy_ids.unsqueeze(1).expand(-1, copy.size(1), -1)
        final = vocab.scatter_add(2, index, copy)
        return final.clamp_min(PROB_FLOOR).log()


def extended_pieces(tokenizer: Tokenizer, ids: Sequence[int], oov_src_ids: Sequence[int]
                    ) -> list[str]:
    """Output ids (target vocabulary plus extra ids) -> pieces (EOS as ``</s>``)."""
    v = tokenizer.tgt_vocab_size
    pieces = []
    for i in ids:
        if i == EOS_ID:
            pieces.append("</s>")
        elif i >= v:
            pieces.append(tokenizer.src.id_to_piece(int(oov_src_ids[i - v])))
        else:
            pieces.append(tokenizer.tgt.id_to_piece(int(i)))
    return pieces


def extended_text(tokenizer: Tokenizer, ids: Sequence[int], oov_src_ids: Sequence[int]) -> str:
    """Output ids -> text. Runs of target-vocabulary ids go through the target SentencePiece
    model; a copied out-of-vocabulary piece is written as its surface (▁ = a space)."""
    v = tokenizer.tgt_vocab_size
    parts: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            text = str(tokenizer.tgt.decode([i for i in run if i > EOS_ID]))
            starts_word = tokenizer.tgt.id_to_piece(run[0]).startswith("\u2581")
            parts.append((" " if parts and starts_word else "") + text)
            run.clear()

    for i in ids:
        if i == EOS_ID:
            continue
        if i >= v:
            flush()
            parts.append(tokenizer.src.id_to_piece(int(oov_src_ids[i - v])).replace("\u2581", " "))
        else:
            run.append(int(i))
    flush()
    return " ".join("".join(parts).split())
