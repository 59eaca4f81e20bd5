"""Lexically constrained beam search: every output contains each of its sentence's phrases.

Grid beam search with dynamic beam allocation (Post & Vilar 2018, "Fast Lexically
Constrained Decoding with Dynamic Beam Allocation for Neural Machine Translation"), with the
bank ordering of fairseq's vectorized version (Hu et al. 2019, "Improved Lexically Constrained
Decoding for Translation and Monolingual Rewriting"). Written against the decoding protocol
of :mod:`heedful.decoding.search` (``encode``, ``init_state``, ``step``, ``state.select``)
only, so every architecture gets it.

At each step a sentence's candidates are

* the 2k best extensions of its k beams, as in plain beam search;
* each beam's best next token;
* each beam's tokens that advance a phrase: the phrase's next token when the beam is inside
  one, else the first token of each phrase it has not met.

A candidate's *bank* is the number of phrase tokens it has met. The k beams are filled
round-robin over the banks, most phrase tokens first: the best candidate of every bank, then
the second best of every bank, and so on (Hu et al.'s ordering; Post & Vilar split the beam
evenly between banks), so a hypothesis that honours more of the phrases is not crowded out by
cheaper ones that honour fewer. Without phrases there is one bank and the search is plain
beam search.

Matching: a phrase is a sequence of target subword ids, met when its tokens come one after
another. A hypothesis is inside at most one phrase at a time; a token that does not continue
the phrase drops that progress (and may start a phrase anew). EOS is allowed only once every
phrase is met, and a candidate is dropped when the phrase tokens it still needs exceed the
steps left before the length cap, so every hypothesis that reaches the cap has met them all:
each output contains every phrase, as long as the phrases fit in the cap (checked first).

The bookkeeping is on the host, one sentence at a time; the scores, the attention history and
the decoder state stay on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from heedful.decoding.search import (
    Decodable,
    Hypothesis,
    _hypothesis,
    _sentence_done,
    host_values,
    reorder_beams,
    repeat_rows,
)
from heedful.tokenizer import BOS_ID, EOS_ID

Phrases = Sequence[Sequence[int]]
"""One sentence's constraints: target phrases as subword ids."""


@dataclass(frozen=True)
class Progress:
    """Where a hypothesis stands with its sentence's phrases: which are ``met``, and the
    phrase it is ``inside`` (its index; None if none) with ``pos`` of its tokens so far."""

    met: tuple[bool, ...]
    inside: int | None = None
    pos: int = 0
    ended: bool = False
    """The last token completed a phrase (the next may not continue its word)."""

    def advance(self, token: int, phrases: Phrases) -> Progress:
        """The progress after ``token``."""
        if self.inside is not None:
            phrase = phrases[self.inside]
            if token == phrase[self.pos]:
                if self.pos + 1 == len(phrase):
                    return Progress(_with(self.met, self.inside), ended=True)
                return replace(self, pos=self.pos + 1)
        for c, phrase in enumerate(phrases):  # a token that starts a phrase not yet met
            if not self.met[c] and phrase[0] == token:
                return Progress(_with(self.met, c), ended=True) if len(phrase) == 1 \
                    else Progress(self.met, c, 1)
        return self if self.inside is None and not self.ended else Progress(self.met)

    def wanted(self, phrases: Phrases) -> list[int]:
        """The tokens that advance a phrase from here."""
        if self.inside is not None:
            return [phrases[self.inside][self.pos]]
        return [p[0] for p, met in zip(phrases, self.met, strict=True) if not met]

    def met_tokens(self, phrases: Phrases) -> int:
        """The bank: phrase tokens met so far (whole phrases and the one it is inside)."""
        return sum(len(p) for p, met in zip(phrases, self.met, strict=True) if met) + self.pos

    @property
    def all_met(self) -> bool:
        return all(self.met)


def _with(met: tuple[bool, ...], c: int) -> tuple[bool, ...]:
    return (*met[:c], True, *met[c + 1 :])


@dataclass
class _Beam:
    """One live hypothesis on the host: its tokens, their log-probs, its progress."""

    tokens: list[int]
    log_probs: list[float]
    progress: Progress


@dataclass(frozen=True)
class _Candidate:
    score: float
    beam: int
    token: int
    log_prob: float
    progress: Progress
    bank: int


@dataclass
class _Sentence:
    """One sentence's search: its phrases, cap, live beams (k slots, None = empty) and
    finished hypotheses."""

    phrases: Phrases
    cap: int
    beams: list[_Beam | None]
    finished: list[Hypothesis] = field(default_factory=list)

    @property
    def need(self) -> int:
        return sum(len(p) for p in self.phrases)


def check_room(constraints: Sequence[Phrases], caps: Sequence[int]) -> None:
    """Every phrase non-empty, and each sentence's phrases fit in its output cap (a
    ``ValueError`` naming the sentence otherwise)."""
    for i, (phrases, cap) in enumerate(zip(constraints, caps, strict=True)):
        if any(len(p) == 0 for p in phrases):
            raise ValueError(f"sentence {i}: an empty constraint")
        need = sum(len(p) for p in phrases)
        if need > cap:
            raise ValueError(f"sentence {i}: its constraints take {need} tokens, more than its "
                             f"output cap ({cap})")


@torch.inference_mode()
def constrained_beam_search(model: Decodable, src: Tensor, src_mask: Tensor, max_len: Tensor,
                            constraints: Sequence[Phrases], beam_size: int, alpha: float = 1.0,
                            n_best: int = 1, return_attention: bool = False,
                            stop: str = "certain", continues_word: Tensor | None = None
                            ) -> list[list[Hypothesis]]:
    """Beam search whose every hypothesis contains each of its sentence's ``constraints``
    (per sentence, phrases of target ids); the ``n_best`` of each sentence, best first.
    Scores, length penalty and stop rules are those of
    :func:`~heedful.decoding.search.beam_search`. ``continues_word`` (V,) bool: the tokens
    that may not follow a completed phrase (the pieces that would glue onto its last word,
    see :meth:`~heedful.tokenizer.Tokenizer.tgt_continues_word`); None: any may."""
    if stop not in ("certain", "top_finished"):
        raise ValueError(f"unknown beam stop rule {stop!r}; choose certain or top_finished")
    if n_best > beam_size:
        raise ValueError(f"n_best ({n_best}) cannot exceed beam_size ({beam_size})")
    if len(constraints) != src.size(0):
        raise ValueError(f"{len(constraints)} constraint lists for {src.size(0)} sentences")
    k, n_total, device = beam_size, src.size(0), src.device
    caps, src_lens = max_len.tolist(), src_mask.sum(1).tolist()
    check_room(constraints, caps)
    searches = [_Sentence(p, cap, [_Beam([], [], Progress((False,) * len(p)))] + [None] * (k - 1))
                for p, cap in zip(constraints, caps, strict=True)]
    state = repeat_rows(model.init_state(model.encode(src, src_mask)), n_total, k)
    sents = list(range(n_total))  # sentence id of each active batch slot
    scores = torch.full((n_total, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    hist: Tensor | None = None  # attention so far of each row: (n * k, T, L, H, S)
    prev = torch.full((n_total * k,), BOS_ID, dtype=torch.long, device=device)
    settings = _Settings(k, n_best, alpha, stop)
    for t in range(max(caps, default=0)):
        active = [searches[s] for s in sents]
        logp, state, attn = model.step(prev, state, return_attention)
        settings.lp_dtype = torch.promote_types(settings.lp_dtype, logp.dtype)
        _mask(logp, active, continues_word)
        cands = _candidates(scores, logp, active, t)
        parents, tokens, new_scores, keep = [], [], [], []
        for i, (sent, search) in enumerate(zip(sents, active, strict=True)):
            chosen = _step_sentence(search, cands[i], t, settings, src_lens[sent],
                                    _AttentionRows(hist, attn, i * k))
            if chosen is None:  # the sentence is done
                continue
            keep.append(i)
            parents.append([0 if c is None else c.beam for c in chosen])
            tokens.append([EOS_ID if c is None else c.token for c in chosen])
            new_scores.append([float("-inf") if c is None else c.score for c in chosen])
        if not keep:
            break
        idx = torch.tensor(keep, device=device)
        # old batch row of each new beam: its sentence's slot * k + its parent beam
        rows = (idx.unsqueeze(1) * k + torch.tensor(parents, device=device)).view(-1)
        if attn is not None:
            step_rows = attn[rows].unsqueeze(1)
            hist = step_rows if hist is None else torch.cat([hist[rows], step_rows], 1)
        state = reorder_beams(state, rows, None if len(keep) == len(sents) else idx)
        sents = [sents[i] for i in keep]
        scores = torch.tensor(new_scores, dtype=scores.dtype, device=device)
        prev = torch.tensor(tokens, dtype=torch.long, device=device).view(-1)
    for i, s in enumerate(searches):
        if not s.finished:  # cannot happen while the phrases fit (checked above): a bug
            raise RuntimeError(f"sentence {i}: constrained search ended without an output")
    return [sorted(s.finished, key=lambda h: h.norm_score, reverse=True)[:n_best]
            for s in searches]


@dataclass
class _Settings:
    k: int
    n_best: int
    alpha: float
    stop: str
    lp_dtype: torch.dtype = field(default_factory=torch.get_default_dtype)


@dataclass
class _AttentionRows:
    """A step's attention for the hypotheses that end in it: the history of every row
    (n * k, T, L, H, S), the step's rows (n * k, L, H, S), this sentence's first row."""

    history: Tensor | None
    step: Tensor | None
    base: int

    def ending_from(self, b: int) -> Tensor | None:
        """Beam b's attention with this step's row: (T + 1, L, H, S), or None."""
        if self.step is None:
            return None
        row = self.step[self.base + b].unsqueeze(0)
        return row if self.history is None else torch.cat([self.history[self.base + b], row])


def _mask(logp: Tensor, active: list[_Sentence], continues_word: Tensor | None) -> None:
    """In place: EOS gets log-prob -inf in the rows of beams with phrases still to meet, and
    the ``continues_word`` tokens in the rows of beams whose last token ended a phrase."""
    rows = [i * len(s.beams) + b for i, s in enumerate(active)
            for b, beam in enumerate(s.beams) if beam is not None and not beam.progress.all_met]
    if rows:
        logp[torch.tensor(rows, device=logp.device), EOS_ID] = float("-inf")
    ended = [i * len(s.beams) + b for i, s in enumerate(active)
             for b, beam in enumerate(s.beams) if beam is not None and beam.progress.ended]
    if ended and continues_word is not None:
        glue = continues_word.to(logp.device)
        if glue.numel() < logp.size(-1):  # a copy model's extra ids (copied source words)
            glue = torch.cat([glue, glue.new_zeros(logp.size(-1) - glue.numel())])
        index = torch.tensor(ended, device=logp.device)
        logp[index] = logp[index].masked_fill(glue, float("-inf"))


def _candidates(scores: Tensor, logp: Tensor, active: list[_Sentence], t: int
                ) -> list[list[_Candidate]]:
    """Each sentence's candidates at step t (see the module docstring): scores (n, k) and the
    step's log-probs (n * k, V) -> per sentence, its distinct feasible extensions, in the
    order: the 2k best by score, then each beam's best token, then the phrase tokens."""
    n, k, vocab = scores.size(0), scores.size(1), logp.size(-1)
    flat_lp = logp.view(n, k * vocab)
    total = (scores.unsqueeze(2) + logp.view(n, k, vocab)).view(n, k * vocab)
    top_s, top_i = total.topk(min(2 * k, k * vocab), dim=1)
    want_rows, want_toks = [], []
    for i, search in enumerate(active):
        for b, beam in enumerate(search.beams):
            if beam is not None:
                for tok in beam.progress.wanted(search.phrases):
                    want_rows.append(i * k + b)
                    want_toks.append(tok)
    best_tok = logp.argmax(-1)
    rows = torch.cat([torch.arange(n * k, device=logp.device),
                      torch.tensor(want_rows, dtype=torch.long, device=logp.device)])
    toks = torch.cat([best_tok, torch.tensor(want_toks, dtype=torch.long, device=logp.device)])
    extra_lp = logp[rows, toks]
    top = host_values(top_s, top_i, flat_lp.gather(1, top_i))
    extra = host_values(scores.view(-1)[rows] + extra_lp, rows, toks, extra_lp)
    raw: list[list[tuple[float, int, int, float]]] = [
        [(s, int(j) // vocab, int(j) % vocab, lp) for s, j, lp in zip(*row, strict=True)]
        for row in zip(*top, strict=True)]
    for s, row, tok, lp in zip(*extra, strict=True):
        raw[int(row) // k].append((s, int(row) % k, int(tok), lp))
    return [_feasible(search, cands, t) for search, cands in zip(active, raw, strict=True)]


def _feasible(search: _Sentence, raw: list[tuple[float, int, int, float]], t: int
              ) -> list[_Candidate]:
    """The distinct candidates (beam, token) with a finite score whose phrases can still all
    be met before the cap, with their progress and bank."""
    out: dict[tuple[int, int], _Candidate] = {}
    room = search.cap - (t + 1)
    for score, b, tok, lp in raw:
        beam = search.beams[b]
        if (b, tok) in out or beam is None or score == float("-inf"):
            continue
        progress = beam.progress if tok == EOS_ID else beam.progress.advance(tok, search.phrases)
        bank = progress.met_tokens(search.phrases)
        if search.need - bank > room:
            continue
        out[b, tok] = _Candidate(score, b, tok, lp, progress, bank)
    return list(out.values())


def _allocate(cands: list[_Candidate]) -> list[_Candidate]:
    """Dynamic beam allocation: the candidates round-robin over banks, most phrase tokens
    first (the best of each bank, then the second best of each, ...)."""
    ranked = sorted(cands, key=lambda c: -c.score)  # stable: ties keep the search's order
    seen: dict[int, int] = {}
    keyed = []
    for pos, c in enumerate(ranked):
        rank = seen.get(c.bank, 0)
        seen[c.bank] = rank + 1
        keyed.append(((rank, -c.bank, pos), c))
    return [c for _, c in sorted(keyed, key=lambda x: x[0])]


def _step_sentence(search: _Sentence, cands: list[_Candidate], t: int, settings: _Settings,
                   src_len: int, attention: _AttentionRows) -> list[_Candidate | None] | None:
    """One step of one sentence: an EOS among the first k allocated candidates finishes a
    hypothesis; the first k others become its beams (finished there at the cap). Returns the
    new beams' candidates (k, None for an empty slot), or None when the sentence is done."""
    order, k = _allocate(cands), settings.k

    def finish(tokens: list[int], lps: list[float], b: int) -> None:
        search.finished.append(_hypothesis(tokens, lps, attention.ending_from(b), src_len,
                                           settings.alpha, settings.lp_dtype))

    for c in order[:k]:
        if c.token == EOS_ID:
            parent = search.beams[c.beam]
            assert parent is not None
            finish([*parent.tokens, EOS_ID], [*parent.log_probs, c.log_prob], c.beam)
    alive = [c for c in order if c.token != EOS_ID][:k]
    beams: list[_Beam | None] = []
    for c in alive:
        parent = search.beams[c.beam]
        assert parent is not None
        beams.append(_Beam([*parent.tokens, c.token], [*parent.log_probs, c.log_prob],
                           c.progress))
    search.beams = beams + [None] * (k - len(alive))
    if t + 1 >= search.cap:  # out of room: the beams end here, without EOS
        for c, beam in zip(alive, beams, strict=True):
            if beam is not None and beam.progress.all_met:
                finish(beam.tokens, beam.log_probs, c.beam)
        return None
    if not alive or _sentence_done(settings.stop, search.finished, settings.n_best,
                                   bool(order) and order[0].token == EOS_ID,
                                   max(c.score for c in alive), search.cap, settings.alpha):
        return None
    return [*alive, *([None] * (k - len(alive)))]
