"""Forced decoding: run a model over *given* source/target pairs (teacher forcing).

The basis of ``heedful score`` (the model's log-probability of each pair, as fairseq's
reference scoring reports it) and of ``heedful align`` (attention over a given translation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from heedful.data import pad
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Forced:
    """One pair's forced decoding.

    log_prob: sum of log p(y_t | y_<t, x) over the target pieces and the final EOS;
    num_tokens: how many terms that sum has (target pieces + 1);
    attention: (T = num_tokens, L, H, S) float32 weights over the source pieces (incl. the
    source EOS), row t = the step that predicts target piece t (the last row predicts EOS);
    ``None`` unless asked for, or for a model without attention.
    """

    log_prob: float
    num_tokens: int
    attention: np.ndarray | None = None

    @property
    def per_token(self) -> float:
        return self.log_prob / self.num_tokens


def force_decode(model: Seq2SeqModel, src: Sequence[list[int]], tgt: Sequence[list[int]],
                 need_attention: bool = False, batch_tokens: int = 8000,
                 progress: bool = False) -> list[Forced]:
    """Teacher-forced log-probabilities (and attention) for each (src, tgt) pair.

    src: id lists ending with EOS (as :meth:`Tokenizer.encode_src` gives); tgt: bare id lists
    (BOS/EOS are added here). Pairs are length-sorted into batches of about ``batch_tokens``
    (sentences x longest side) and returned in the input order.
    """
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
    order = sorted(range(len(src)), key=lambda i: (len(tgt[i]), len(src[i])))
    results: list[Forced | None] = [None] * len(src)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(src), unit="sent", desc="force-decode", leave=False)
    model.eval()
    start = 0
    while start < len(order):
        # grow the batch while sentences x longest side stays within the budget
        end, longest = start, 0
        while end < len(order):
            i = order[end]
            side = max(len(src[i]), len(tgt[i]) + 1)
            if end > start and (end - start + 1) * max(longest, side) > batch_tokens:
                break
            longest = max(longest, side)
            end += 1
        batch = order[start:end]
        for i, res in zip(batch, _force_batch(model, [src[i] for i in batch],
                                              [tgt[i] for i in batch], need_attention),
                          strict=True):
            results[i] = res
        if bar is not None:
            bar.update(len(batch))
        start = end
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]


def _force_batch(model: Seq2SeqModel, src: list[list[int]], tgt: list[list[int]],
                 need_attention: bool) -> list[Forced]:
    src_t, src_mask = pad(src, PAD_ID)
    tgt_in, _ = pad([[BOS_ID, *t] for t in tgt], PAD_ID)
    tgt_out, out_mask = pad([[*t, EOS_ID] for t in tgt], PAD_ID)
    m: Any = model  # either architecture: the decoding protocol is all that is used
    device = next(model.parameters()).device
    src_t, src_mask, tgt_in, tgt_out, out_mask = (
        t.to(device) for t in (src_t, src_mask, tgt_in, tgt_out, out_mask))
    with torch.inference_mode():
        state = m.init_state(m.encode(src_t, src_mask))
        logits, attention, _ = m.decode(tgt_in, state, need_weights=need_attention)
        log_probs = torch.log_softmax(logits.float(), -1)
        token_lp = log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1) * out_mask
        totals = token_lp.sum(-1).cpu()
        if attention is not None:
            attention = attention.cpu()
    out = []
    for b, (s, t) in enumerate(zip(src, tgt, strict=True)):
        attn = None
        if attention is not None:  # (B, T, L, H, S) -> this pair's (T_b, L, H, S_b)
            attn = attention[b, : len(t) + 1, :, :, : len(s)].float().numpy()
        out.append(Forced(float(totals[b]), len(t) + 1, attn))
    return out
