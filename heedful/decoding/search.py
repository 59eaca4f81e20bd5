"""Greedy and beam search, written against the decoding protocol only.

A model offers ``encode(src, src_mask)``, ``init_state(encoder_output)`` and
``step(prev_tokens (B,), state, need_weights) -> (log_probs (B, V), state, attention
(B, L, H, S) | None)``; a state offers ``select(index)`` (and may offer ``repeat_rows(n, k)``,
see :func:`repeat_rows`). Nothing here knows the architecture.

Scores are sums of token log-probabilities; beam search ranks finished hypotheses by
score / lp(length) with the GNMT length penalty lp(n) = ((5 + n) / 6) ** alpha (Wu et al.
2016), where n counts output tokens including the final EOS.

Beam search stops a sentence only when its n-best list is *certain*: no hypothesis still in
the beam can end with a better normalised score. Log-probabilities are <= 0, so an alive
hypothesis with running score s can at best finish with s / lp(max_len) — that is the bound
checked (for alpha = 0 it is s itself, and the search ends as soon as the best alive score
falls below the n-th finished one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from heedful.tokenizer import BOS_ID, EOS_ID


class DecoderState(Protocol):
    def select(self, index: Tensor) -> Any: ...


class Decodable(Protocol):
    def encode(self, src: Tensor, src_mask: Tensor) -> Any: ...

    def init_state(self, encoder_output: Any) -> DecoderState: ...

    def step(self, prev_tokens: Tensor, state: Any, need_weights: bool = False
             ) -> tuple[Tensor, DecoderState, Tensor | None]: ...


class StepFromDecode:
    """``step`` for models whose ``decode(tgt_in (B, T), state, need_weights)`` returns
    (logits (B, T, V), attention (B, T, L, H, S) | None, state): one step = T of 1."""

    def decode(self, tgt_in: Tensor, state: Any, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, Any]:
        raise NotImplementedError

    def step(self, prev_tokens: Tensor, state: Any, need_weights: bool = False
             ) -> tuple[Tensor, Any, Tensor | None]:
        """prev_tokens (B,) -> log-probs (B, V), state, attention (B, L, H, S) or None."""
        logits, attention, state = self.decode(prev_tokens.unsqueeze(1), state, need_weights)
        return (torch.log_softmax(logits.squeeze(1).float(), dim=-1), state,
                None if attention is None else attention.squeeze(1))


@dataclass
class Hypothesis:
    """One output: tokens (with the final EOS if it ended), total log-prob ``score``,
    length-normalised ``norm_score``, per-token log-probs, and attention (T_out, L, H, S)."""

    tokens: list[int]
    score: float
    norm_score: float
    token_scores: list[float] = field(default_factory=list)
    attention: Tensor | None = None


def repeat_rows(state: Any, n: int, k: int) -> Any:
    """Each of the state's n rows k times in a row: n -> n * k rows, sentence-major.

    A state that can keep per-sentence tensors shared by its k copies (the Transformer's
    encoder memory and cross-attention keys/values) offers ``repeat_rows(n, k)``; any other
    is gathered row by row with ``select``.
    """
    if k == 1:  # each row once, in order: the state as it is
        return state
    if hasattr(state, "repeat_rows"):
        return state.repeat_rows(n, k)
    return state.select(torch.arange(n).repeat_interleave(k))


def whole_sentences(index: Tensor, group: int) -> Tensor | None:
    """For rows grouped ``group`` per sentence (a sentence's k beams): the sentences (M / group,)
    that row ``index`` (M,) keeps, if it keeps every one whole (its ``group`` result rows
    all come from one sentence, in any order); None if it splits or mixes sentences."""
    if index.numel() % group:
        return None
    sentence = torch.div(index, group, rounding_mode="floor").view(-1, group)
    if not bool((sentence == sentence[:, :1]).all()):
        return None
    return sentence[:, 0]


class SentenceGroupedState:
    """``select`` for a decoder state whose rows are grouped ``group`` per sentence (the k beams
    of one sentence share its per-sentence tensors; see ``TransformerState``).

    The state provides ``group``, ``_gather(sentences, rows, group)`` (per-sentence tensors
    from ``sentences``, per-row tensors from ``rows``) and ``_ungrouped()`` (one sentence row
    per decoder row)."""

    group: int

    def select(self, index: Tensor) -> Any:
        """The state of rows ``index`` (M,): row i of the result is row index[i] of this one."""
        g = self.group
        if g > 1:
            sentences = whole_sentences(index, g)
            if sentences is None:  # splits a sentence: one sentence row per decoder row
                return self._ungrouped().select(index)
            return self._gather(sentences, index, g)
        return self._gather(index, index, 1)

    def reorder_beams(self, rows: Tensor, sentences: Tensor | None) -> Any:
        """``select(rows)`` for rows that keep whole sentences (see :func:`reorder_beams`),
        without reading ``rows`` back from the device."""
        if self.group > 1:
            return self._gather(sentences, rows, self.group)
        return self._gather(rows, rows, 1)

    def _gather(self, sentences: Tensor | None, rows: Tensor, group: int) -> Any:
        """Per-sentence tensors from ``sentences`` (None: all, as they are), per-row tensors
        from ``rows``."""
        raise NotImplementedError

    def _ungrouped(self) -> Any:
        raise NotImplementedError


def pick_rows(t: Tensor, index: Tensor | None, dim: int = 0) -> Tensor:
    """``t.index_select(dim, index)``, or ``t`` itself when ``index`` is None (every row kept,
    in order: a beam step that keeps every sentence copies nothing). The caller says which,
    because checking ``index`` against 0, 1, ..., n-1 would read it back from the device."""
    return t if index is None else t.index_select(dim, index)


def reorder_beams(state: Any, rows: Tensor, sentences: Tensor | None) -> Any:
    """Beam search's ``select``: row i of the result is row ``rows[i]`` (M,) of ``state``, and
    ``rows`` keeps whole sentences, a sentence's k beams together (any order within it);
    ``sentences`` (M / k,) are the sentences kept, None when all are, in order.

    A state offering ``reorder_beams(rows, sentences)`` (see :class:`SentenceGroupedState`)
    uses what the search knows on the host instead of checking ``rows`` on the device; any
    other state is gathered with ``select``."""
    if hasattr(state, "reorder_beams"):
        return state.reorder_beams(rows, sentences)
    return state.select(rows)


def host_values(*tensors: Tensor) -> list[Any]:
    """Same-shaped tensors as nested lists in one device-to-host copy (one synchronisation of
    the decoding step). float64 holds every float32 value and every token id exactly."""
    return torch.stack([t.double() for t in tensors]).tolist()


def length_penalty(length: int | Tensor, alpha: float) -> Any:
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_mask: Tensor, a: float, b: int) -> Tensor:
    """Per-sentence output cap: a * source length + b (source length without EOS)."""
    src_len = src_mask.sum(1) - 1
    return (a * src_len.float()).floor().long() + b


@torch.inference_mode()
def greedy_search(model: Decodable, src: Tensor, src_mask: Tensor, max_len: Tensor,
                  return_attention: bool = False) -> list[list[Hypothesis]]:
    """Greedy decoding of a batch; finished sentences leave the batch. One hyp per sentence.

    One device-to-host copy per step (the rows' tokens and log-probs); the index of the rows
    that stay goes to the device only on a step where a sentence ends."""
    n, device = src.size(0), src.device
    state = model.init_state(model.encode(src, src_mask))
    src_lens, caps = src_mask.sum(1).tolist(), max_len.tolist()
    rows = list(range(n))  # sentence id of each batch row
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    scores: list[list[float]] = [[] for _ in range(n)]
    attns: list[list[Tensor]] = [[] for _ in range(n)]
    for t in range(max(caps, default=0)):
        logp, state, attn = model.step(prev, state, return_attention)
        best, tok = logp.max(-1)
        best_list, tok_list = host_values(best, tok)
        keep = []
        for r, sent in enumerate(rows):
            token = int(tok_list[r])
            tokens[sent].append(token)
            scores[sent].append(best_list[r])
            if attn is not None:
                attns[sent].append(attn[r, :, :, : src_lens[sent]])
            if token != EOS_ID and t + 1 < caps[sent]:
                keep.append(r)
        if not keep:
            break
        if len(keep) < len(rows):
            idx = torch.tensor(keep, device=device)
            state, tok = state.select(idx), tok[idx]
            rows = [rows[r] for r in keep]
        prev = tok
    return single_hypotheses(tokens, scores, attns)


def single_hypotheses(tokens: list[list[int]], scores: list[list[float]],
                      attns: list[list[Tensor]]) -> list[list[Hypothesis]]:
    """One hypothesis per sentence from per-step tokens, log-probs and attention rows (the
    searches that keep one candidate: greedy and sampling)."""
    out = []
    for toks, lps, rows in zip(tokens, scores, attns, strict=True):
        total = sum(lps)
        out.append([Hypothesis(toks, total, total, lps, torch.stack(rows) if rows else None)])
    return out


@torch.inference_mode()
def beam_search(model: Decodable, src: Tensor, src_mask: Tensor, max_len: Tensor,
                beam_size: int, alpha: float = 1.0, n_best: int = 1,
                return_attention: bool = False, stop: str = "certain"
                ) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``n_best`` hypotheses of each sentence, best first.

    All beams of all unfinished sentences step together as one batch of n * k rows; a
    sentence leaves the batch when its n-best list is certain (``stop="certain"``, see the
    module docstring) or, with ``stop="top_finished"``, as soon as the best candidate of a
    step is EOS and ``n_best`` hypotheses have finished (the peers' rule: all candidates of a
    step have the same length, so the raw-score best is also the length-normalised best).

    The device keeps the running scores, the attention history and the decoder state; the
    host keeps each sentence's search as back-pointers (:class:`_Beams`), filled from one
    device-to-host copy of the step's candidates, and decides from them which hypotheses
    finish and which sentences are done.
    """
    if stop not in ("certain", "top_finished"):
        raise ValueError(f"unknown beam stop rule {stop!r}; choose certain or top_finished")
    if n_best > beam_size:
        raise ValueError(f"n_best ({n_best}) cannot exceed beam_size ({beam_size})")
    k, n_total, device = beam_size, src.size(0), src.device
    book = _Beams(k, n_best, alpha, stop, max_len.tolist(), src_mask.sum(1).tolist())
    state = repeat_rows(model.init_state(model.encode(src, src_mask)), n_total, k)
    sents = list(range(n_total))  # sentence id of each active batch slot; beam 0 alone at t = 0
    scores = torch.full((n_total, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    hist_attn: Tensor | None = None
    prev = torch.full((n_total * k,), BOS_ID, dtype=torch.long, device=device)
    for t in range(max(book.caps, default=0)):
        n = len(sents)
        logp, state, attn = model.step(prev, state, return_attention)
        book.lp_dtype = torch.promote_types(book.lp_dtype, logp.dtype)
        top_scores, beam_idx, tok, flat_lp = _top_candidates(scores, logp, n, k)
        base = torch.arange(n, device=device).unsqueeze(1)
        # alive: the first k non-EOS candidates (stable order = by score; a beam has one EOS
        # candidate, so at least k of the 2k are not EOS)
        ranks = torch.arange(tok.size(1), device=device).float()
        order = torch.argsort((tok == EOS_ID).float() * 1e9 + ranks, dim=1)[:, :k]
        new_beam, new_tok = beam_idx.gather(1, order), tok.gather(1, order)
        scores = top_scores.gather(1, order)
        parent_attn = hist_attn
        if attn is not None:
            step_attn = attn.view(n, k, *attn.shape[1:])[base, new_beam].unsqueeze(2)
            hist_attn = step_attn if hist_attn is None else torch.cat(
                [hist_attn[base, new_beam], step_attn], 2)
        rows = _StepAttention(parent_attn, attn, hist_attn, n, k)
        # the step's one device-to-host copy: each candidate's score, parent, token, log-prob
        cands = host_values(top_scores, beam_idx, tok, flat_lp)
        keep = []
        for i, sent in enumerate(sents):
            if book.advance(t, i, sent, [c[i] for c in cands], rows):
                keep.append(i)
        if not keep:
            break
        if len(keep) < n:
            idx = torch.tensor(keep, device=device)
            sents = [sents[i] for i in keep]
            scores = scores[idx]
            if hist_attn is not None:
                hist_attn = hist_attn[idx]
            new_beam, new_tok = new_beam[idx], new_tok[idx]
            # old batch row of each surviving beam: kept sentence's slot * k + its parent beam
            state = reorder_beams(state, (idx.unsqueeze(1) * k + new_beam).view(-1), idx)
        else:
            state = reorder_beams(state, (base * k + new_beam).view(-1), None)
        prev = new_tok.view(-1)
    return [sorted(f, key=lambda h: h.norm_score, reverse=True)[:n_best] for f in book.finished]


@dataclass
class _Step:
    """One step of one sentence's beams, on the host: the step's 2k candidates (their parent
    beams at the step before, tokens and own log-probs, as copied from the device) and which
    of them became beams 0..k-1 (``alive``)."""

    alive: list[int]
    parents: list[float]
    tokens: list[float]
    log_probs: list[float]


@dataclass
class _StepAttention:
    """A beam step's attention, for the hypotheses that end in it: the history before the
    step (n, k, T, L, H, S), the step's rows (n * k, L, H, S), the history after it
    (n, k, T + 1, L, H, S); all None without attention."""

    before: Tensor | None
    step: Tensor | None
    after: Tensor | None
    n: int
    k: int

    def ending_with_eos(self, i: int, b: int) -> Tensor | None:
        """Slot i's EOS candidate from parent beam b: (T + 1, L, H, S)."""
        return _attention_rows(self.before, self.step, self.n, self.k, i, b)

    def ending_at_cap(self, i: int, b: int) -> Tensor | None:
        """Slot i's alive beam b, out of room: (T + 1, L, H, S)."""
        return None if self.after is None else self.after[i, b]


@dataclass
class _Beams:
    """Beam search's bookkeeping on the host: per sentence, its search as back-pointers
    (``history``: one :class:`_Step` per step) and its finished hypotheses."""

    k: int
    n_best: int
    alpha: float
    stop: str
    caps: list[int]
    src_lens: list[int]
    lp_dtype: torch.dtype = field(default_factory=torch.get_default_dtype)
    history: list[list[_Step]] = field(init=False)
    finished: list[list[Hypothesis]] = field(init=False)

    def __post_init__(self) -> None:
        self.history = [[] for _ in self.caps]
        self.finished = [[] for _ in self.caps]

    def advance(self, t: int, i: int, sent: int, cand: list[list[float]],
                attention: _StepAttention) -> bool:
        """Sentence ``sent`` (batch slot i) at step t, from its 2k candidates ``cand`` (their
        total scores, parent beams, tokens, own log-probs, best first): an EOS among the top k
        finishes a hypothesis; the first k others are its beams from now on (finished there
        if the sentence is out of room). Returns whether the sentence stays in the search."""
        score, beam, tok, lp = cand
        history, k = self.history[sent], self.k
        for j in range(k):  # EOS among the top k (a sentence's best continuations)
            if tok[j] == EOS_ID and score[j] > float("-inf"):
                b = int(beam[j])
                toks, lps = _backtrack(history, b)
                self._finish(sent, [*toks, EOS_ID], [*lps, lp[j]],
                             attention.ending_with_eos(i, b))
        alive = [j for j in range(len(tok)) if tok[j] != EOS_ID][:k]
        history.append(_Step(alive, beam, tok, lp))
        if t + 1 >= self.caps[sent]:
            for b, j in enumerate(alive):  # out of room: the alive beams end here, without EOS
                if score[j] > float("-inf"):
                    self._finish(sent, *_backtrack(history, b), attention.ending_at_cap(i, b))
            return False
        return not _sentence_done(self.stop, self.finished[sent], self.n_best,
                                  tok[0] == EOS_ID, score[alive[0]], self.caps[sent],
                                  self.alpha)

    def _finish(self, sent: int, toks: list[int], lps: list[float], attn: Tensor | None
                ) -> None:
        self.finished[sent].append(_hypothesis(toks, lps, attn, self.src_lens[sent],
                                               self.alpha, self.lp_dtype))


def _backtrack(steps: list[_Step], beam: int) -> tuple[list[int], list[float]]:
    """The tokens and log-probs of ``beam`` after the last of ``steps``, oldest first."""
    toks, lps = [], []
    for step in reversed(steps):
        j = step.alive[beam]
        toks.append(int(step.tokens[j]))
        lps.append(step.log_probs[j])
        beam = int(step.parents[j])
    toks.reverse()
    lps.reverse()
    return toks, lps


def _hypothesis(toks: list[int], lps: list[float], attn: Tensor | None, src_len: int,
                alpha: float, dtype: torch.dtype) -> Hypothesis:
    """A finished beam: tokens (T,), their log-probs (T,), attention (T, L, H, S) or None.

    The total is summed as a CPU tensor of the log-probs' dtype (the host has them already;
    on the CPU, torch's sum of a vector, as before the history moved to the host)."""
    total = float(torch.tensor(lps, dtype=dtype, device="cpu").sum())
    return Hypothesis(toks, total, total / length_penalty(len(toks), alpha), lps,
                      None if attn is None else attn[:, :, :, :src_len].clone())


def _attention_rows(history: Tensor | None, step: Tensor | None, n: int, k: int, i: int,
                    b: int) -> Tensor | None:
    """Beam b of active sentence i: its attention history (n, k, T, L, H, S) plus this step's
    row of ``step`` (n * k, L, H, S) -> (T + 1, L, H, S), or None without attention."""
    if step is None:
        return None
    row = step.view(n, k, *step.shape[1:])[i, b].unsqueeze(0)
    return row if history is None else torch.cat([history[i, b], row])


def _sentence_done(stop: str, finished: list[Hypothesis], n_best: int, best_is_eos: bool,
                   best_alive_score: float, cap: int, alpha: float) -> bool:
    """Whether a sentence's n-best list is settled (see :func:`beam_search`'s stop rules)."""
    if stop == "top_finished":
        return best_is_eos and len(finished) >= n_best
    if len(finished) < n_best:
        return False
    fin = sorted((h.norm_score for h in finished), reverse=True)
    # the best alive beam, even if it grew to the cap, scores at most this
    return fin[n_best - 1] >= best_alive_score / length_penalty(cap, alpha)


def _top_candidates(scores: Tensor, logp: Tensor, n: int, k: int
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 2k best extensions of each sentence's k beams: scores (n, k) and step log-probs
    (n * k, V) -> their total scores, parent beams, tokens and own log-probs, each (n, 2k)."""
    vocab = logp.size(-1)
    cand = (scores.unsqueeze(2) + logp.view(n, k, vocab)).view(n, k * vocab)
    top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)
    beam_idx = torch.div(top_idx, vocab, rounding_mode="floor")
    return top_scores, beam_idx, top_idx % vocab, logp.view(n, k * vocab).gather(1, top_idx)
