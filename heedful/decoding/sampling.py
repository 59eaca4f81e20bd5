"""Decoding for open-ended generation: sampling with temperature, top-k and top-p (nucleus),
plus the repetition controls that also apply to greedy search.

Per step, on the model's log-probabilities (R rows, V tokens):

1. repetition penalty (Keskar et al. 2019, CTRL): tokens already generated in the row get
   their log-probability multiplied by ``repetition_penalty`` (> 1 makes them less likely;
   log-probabilities are negative, so this is CTRL's division of a positive logit);
2. no-repeat-n-gram blocking: a token that would complete an n-gram the row already
   contains gets probability 0;
3. (sampling only) temperature, then top-k (keep the k most likely), then top-p (keep the
   smallest set of most likely tokens whose probability reaches p), renormalise and draw
   from a seeded ``torch.Generator`` on the model's device (:func:`make_generator`;
   ``torch.multinomial`` refuses a generator on another device, and a GPU draws a different
   stream of numbers than the CPU, so samples are reproducible per device).

With top-k = 1 sampling *is* greedy search (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from heedful.decoding.search import Decodable, Hypothesis, host_values, single_hypotheses
from heedful.tokenizer import BOS_ID, EOS_ID


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1.0 = no nucleus cut
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The sampler's random numbers: a ``torch.Generator`` on ``device`` (the model's),
    seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def penalize_repeats(log_probs: Tensor, history: Sequence[Sequence[int]], penalty: float
                     ) -> Tensor:
    """log_probs (R, V); tokens in each row's history are scaled by ``penalty``."""
    if penalty == 1.0:
        return log_probs
    out = log_probs.clone()
    rows: list[int] = []
    tokens: list[int] = []
    for r, seen in enumerate(history):
        once = sorted(set(seen))
        rows += [r] * len(once)
        tokens += once
    if tokens:  # every row's tokens in one host-to-device copy
        index = torch.tensor([rows, tokens], device=log_probs.device)
        out[index[0], index[1]] = out[index[0], index[1]] * penalty
    return out


def block_ngrams(log_probs: Tensor, history: Sequence[Sequence[int]], n: int) -> Tensor:
    """Ban (-inf) each token that would repeat an n-gram already in the row's history."""
    if n <= 0:
        return log_probs
    rows: list[int] = []
    tokens: list[int] = []
    for r, seen in enumerate(history):
        if len(seen) < n:
            continue
        prefix = tuple(seen[len(seen) - n + 1 :]) if n > 1 else ()
        banned = sorted({seen[i + n - 1] for i in range(len(seen) - n + 1)
                         if tuple(seen[i : i + n - 1]) == prefix})
        rows += [r] * len(banned)
        tokens += banned
    if not tokens:
        return log_probs
    out = log_probs.clone()
    index = torch.tensor([rows, tokens], device=log_probs.device)  # one host-to-device copy
    out[index[0], index[1]] = float("-inf")
    return out


def filter_top_k_top_p(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits (R, V) with everything outside the top-k and the top-p nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability mass reaches
    ``top_p`` (the token that crosses the threshold is kept).
    """
    out = logits
    if top_k > 0 and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= top_p  # already reached p without this token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def adjust(log_probs: Tensor, history: Sequence[Sequence[int]], opts: SamplingOptions
           ) -> Tensor:
    """Steps 1-2 of the module doc, renormalised."""
    lp = penalize_repeats(log_probs, history, opts.repetition_penalty)
    lp = block_ngrams(lp, history, opts.no_repeat_ngram_size)
    if lp is log_probs:
        return lp
    return torch.log_softmax(lp, -1)


@torch.inference_mode()
def sample_search(model: Decodable, src: Tensor, src_mask: Tensor, max_len: Tensor,
                  opts: SamplingOptions, generator: torch.Generator | None = None,
                  sample: bool = True, return_attention: bool = False
                  ) -> list[list[Hypothesis]]:
    """Sampling (or, with ``sample=False``, greedy search with the repetition controls).

    Scores are the (adjusted) model log-probabilities of the chosen tokens, before
    temperature and the top-k/top-p cuts.
    """
    n, device = src.size(0), src.device
    state = model.init_state(model.encode(src, src_mask))
    src_lens = src_mask.sum(1).tolist()
    rows = list(range(n))
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    scores: list[list[float]] = [[] for _ in range(n)]
    attns: list[list[Tensor]] = [[] for _ in range(n)]
    caps = max_len.tolist()
    for t in range(max(caps, default=0)):
        logp, state, attn = model.step(prev, state, return_attention)
        logp = adjust(logp, [tokens[s] for s in rows], opts)
        if sample:
            logits = filter_top_k_top_p(logp / opts.temperature, opts.top_k, opts.top_p)
            tok = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            tok = logp.argmax(-1)
        # one device-to-host copy: the chosen tokens and their log-probs
        chosen, tok_list = host_values(logp.gather(1, tok.unsqueeze(1)).squeeze(1), tok)
        keep = []
        for r, sent in enumerate(rows):
            token = int(tok_list[r])
            tokens[sent].append(token)
            scores[sent].append(chosen[r])
            if attn is not None:
                attns[sent].append(attn[r, :, :, : src_lens[sent]])
            keep.append(not (token == EOS_ID or t + 1 >= caps[sent]))
        if not any(keep):
            break
        if not all(keep):
            idx = torch.tensor([r for r, k in enumerate(keep) if k], device=device)
            state, tok = state.select(idx), tok[idx]
            rows = [s for s, k in zip(rows, keep, strict=True) if k]
        prev = tok
    return single_hypotheses(tokens, scores, attns)
