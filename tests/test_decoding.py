"""Greedy and beam search: against a scripted oracle, and on real (random) models."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from heedful.data import pad
from heedful.decoding.search import beam_search, greedy_search, length_penalty
from heedful.nn.architectures import build_model, model_config
from heedful.nn.attention import variant_options
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID

A, B = 4, 5
VOCAB = 6
EPS = 1e-9

# next-token probabilities after each prefix (over EOS, A, B); others: EOS 0.9, A/B 0.05
TABLE = {
    (): {A: 0.55, B: 0.45},
    (A,): {EOS_ID: 0.5, A: 0.3, B: 0.2},
    (B,): {B: 0.9, EOS_ID: 0.1},
    (B, B): {EOS_ID: 0.9, B: 0.1},
}
DEFAULT = {EOS_ID: 0.9, A: 0.05, B: 0.05}


def prob(prefix: tuple[int, ...], token: int) -> float:
    return TABLE.get(prefix, DEFAULT).get(token, EPS)


@dataclass
class OracleState:
    prefixes: list[tuple[int, ...]]

    def select(self, index: torch.Tensor) -> OracleState:
        return OracleState([self.prefixes[i] for i in index.tolist()])


class Oracle:
    """A scripted model implementing the decoding protocol; ignores the source."""

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> int:
        return src.size(0)

    def init_state(self, n: int) -> OracleState:
        return OracleState([() for _ in range(n)])

    def step(self, prev: torch.Tensor, state: OracleState, need_weights: bool = False):
        prefixes = [p if t == BOS_ID else (*p, t) for p, t in
                    zip(state.prefixes, prev.tolist(), strict=True)]
        logp = torch.tensor([[math.log(prob(p, v)) for v in range(VOCAB)] for p in prefixes])
        return logp, OracleState(prefixes), None


def run_beam(beam: int, alpha: float, n_best: int, cap: int = 6):
    src = torch.tensor([[A, EOS_ID]])
    return beam_search(Oracle(), src, src != PAD_ID, torch.tensor([cap]), beam, alpha, n_best)[0]


def test_beam_oracle_hand_computed_nbest() -> None:
    hyps = run_beam(beam=2, alpha=0.0, n_best=2)
    # B B EOS = .45 * .9 * .9 = .3645 beats A EOS = .55 * .5 = .275, found one step later
    assert [h.tokens for h in hyps] == [[B, B, EOS_ID], [A, EOS_ID]]
    assert hyps[0].score == pytest.approx(math.log(0.45 * 0.9 * 0.9))
    assert hyps[1].score == pytest.approx(math.log(0.55 * 0.5))
    assert hyps[0].token_scores == pytest.approx([math.log(0.45), math.log(0.9), math.log(0.9)])


def test_beam_does_not_stop_before_best_is_certain() -> None:
    # A EOS finishes first (step 2) while B B is still alive with a better score
    hyps = run_beam(beam=2, alpha=0.0, n_best=1)
    assert hyps[0].tokens == [B, B, EOS_ID]


def brute_force(alpha: float, cap: int) -> list[tuple[float, list[int]]]:
    results = []
    for n in range(0, cap):
        for body in itertools.product([A, B], repeat=n):
            seq = [*body, EOS_ID]
            s = sum(math.log(prob(tuple(seq[:i]), seq[i])) for i in range(len(seq)))
            results.append((s / length_penalty(len(seq), alpha), seq))
    return sorted(results, reverse=True)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_wide_beam_equals_exhaustive_search(alpha: float) -> None:
    hyps = run_beam(beam=16, alpha=alpha, n_best=3, cap=5)
    expected = brute_force(alpha, cap=5)[:3]
    assert [h.tokens for h in hyps] == [seq for _, seq in expected]
    assert [h.norm_score for h in hyps] == pytest.approx([s for s, _ in expected])


def test_greedy_oracle() -> None:
    src = torch.tensor([[A, EOS_ID]])
    hyp = greedy_search(Oracle(), src, src != PAD_ID, torch.tensor([6]))[0][0]
    assert hyp.tokens == [A, EOS_ID]
    assert hyp.score == pytest.approx(math.log(0.55 * 0.5))


# --------------------------------------------------------------------------- real models

CONFIGS = {
    "scaled_dot+feed": dict(attention="scaled_dot", input_feeding=True),
    "scaled_dot": dict(attention="scaled_dot", input_feeding=False),
    "additive+feed+gru": dict(attention="additive", input_feeding=True, rnn_type="gru"),
    "multihead+2layers": dict(attention="multihead", **{**variant_options("multihead"),
                              "attention_heads": 2}, input_feeding=True,
                              decoder_layers=2, encoder_layers=2),
    "none": dict(attention="none", input_feeding=False),
    "local": dict(attention="local", **variant_options("local"), input_feeding=False),
    "coverage": dict(attention="coverage", **variant_options("coverage"), input_feeding=False),
    "coverage+feed+lstm": dict(attention="coverage", **variant_options("coverage")),
    "transformer": dict(arch="transformer", attention="multihead", attention_heads=2, ff_dim=32,
                        input_feeding=False, embed_dim=16, encoder_layers=2, decoder_layers=2),
    "transformer-post-norm-learned": dict(
        arch="transformer", attention="multihead", attention_heads=4, ff_dim=24,
        input_feeding=False, embed_dim=16, pre_norm=False, positions="learned",
        share_embeddings=True, tie_output=True),
    "conv": dict(arch="conv", attention="dot", embed_dim=12, encoder_layers=2, decoder_layers=3,
                 kernel_size=3),
}


def small_model(**overrides):
    torch.manual_seed(3)
    cfg = model_config(**{"embed_dim": 12, "hidden_dim": 16, "dropout": 0.0, **overrides})
    return build_model(cfg, 20, 20).eval()


def sources():
    gen = torch.Generator().manual_seed(0)
    seqs = [([*torch.randint(4, 20, (n,), generator=gen).tolist(), EOS_ID]) for n in (7, 3, 11)]
    return seqs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_step_by_step_equals_teacher_forced(name: str) -> None:
    model = small_model(**CONFIGS[name])
    src, src_mask = pad(sources(), PAD_ID)
    tgt_in = torch.tensor([[BOS_ID, 5, 6, 7, 8], [BOS_ID, 9, 9, 4, 4], [BOS_ID, 4, 5, 6, 7]])
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_mask, tgt_in), -1)
        state = model.init_state(model.encode(src, src_mask))
        for t in range(tgt_in.size(1)):
            logp, state, _ = model.step(tgt_in[:, t], state)
            torch.testing.assert_close(logp, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_beam_size_one_equals_greedy(name: str) -> None:
    model = small_model(**CONFIGS[name])
    src, src_mask = pad(sources(), PAD_ID)
    caps = torch.full((3,), 12)
    greedy = greedy_search(model, src, src_mask, caps)
    beam = beam_search(model, src, src_mask, caps, beam_size=1, alpha=0.0)
    for g, b in zip(greedy, beam, strict=True):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("beam", [1, 4])
def test_alone_equals_inside_padded_batch(name: str, beam: int) -> None:
    model = small_model(**CONFIGS[name])
    seqs = sources()
    src, src_mask = pad(seqs, PAD_ID)
    caps = torch.full((3,), 12)
    need = name != "none"
    batched = beam_search(model, src, src_mask, caps, beam, 1.0, 1, return_attention=need)
    for i, s in enumerate(seqs):
        one = torch.tensor([s])
        alone = beam_search(model, one, one != PAD_ID, caps[:1], beam, 1.0, 1,
                            return_attention=need)[0][0]
        assert batched[i][0].tokens == alone.tokens
        assert batched[i][0].score == pytest.approx(alone.score, abs=1e-4)
        if need:
            assert batched[i][0].attention is not None and alone.attention is not None
            torch.testing.assert_close(batched[i][0].attention, alone.attention, atol=1e-5,
                                       rtol=1e-4)


def test_attention_returned_with_protocol_shape() -> None:
    model = small_model(attention="multihead", attention_heads=2)
    src, src_mask = pad(sources(), PAD_ID)
    hyps = beam_search(model, src, src_mask, torch.full((3,), 6), 3, 1.0, 2,
                       return_attention=True)
    for i, nbest in enumerate(hyps):
        assert len(nbest) == 2
        h = nbest[0]
        assert h.attention is not None
        assert h.attention.shape == (len(h.tokens), 1, 2, int(src_mask[i].sum()))
        torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens), 1, 2))


def test_n_best_larger_than_beam_is_an_error() -> None:
    src = torch.tensor([[A, EOS_ID]])
    with pytest.raises(ValueError, match="n_best \\(3\\) cannot exceed beam_size \\(2\\)"):
        beam_search(Oracle(), src, src != PAD_ID, torch.tensor([5]), 2, 0.0, 3)


class CountingOracle(Oracle):
    def __init__(self) -> None:
        self.steps = 0

    def step(self, prev: torch.Tensor, state: OracleState, need_weights: bool = False):
        self.steps += 1
        return super().step(prev, state, need_weights)


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_top_finished_stops_when_the_best_candidate_ends(alpha: float) -> None:
    src = torch.tensor([[A, EOS_ID]])
    runs = {}
    for stop in ("certain", "top_finished"):
        model = CountingOracle()
        hyps = beam_search(model, src, src != PAD_ID, torch.tensor([8]), 2, alpha, 1,
                           stop=stop)[0]
        runs[stop] = (model.steps, hyps[0].tokens)
    # step 3's best candidate is B B EOS: the peers' rule ends there, with the same answer
    assert runs["top_finished"] == (3, [B, B, EOS_ID])
    assert runs["certain"][1] == [B, B, EOS_ID]
    if alpha > 0:  # a strong length bonus: the exact rule must rule out longer ones first
        assert runs["certain"][0] > 3


def test_top_finished_is_exact_without_length_penalty() -> None:
    # alpha = 0: scores only fall, so a best candidate that ends beats every alive one
    model = CountingOracle()
    src = torch.tensor([[A, EOS_ID]])
    hyps = beam_search(model, src, src != PAD_ID, torch.tensor([5]), 16, 0.0, 1,
                       stop="top_finished")[0]
    assert hyps[0].tokens == brute_force(0.0, cap=5)[0][1]


def test_unknown_stop_rule_is_an_error() -> None:
    src = torch.tensor([[A, EOS_ID]])
    with pytest.raises(ValueError, match="unknown beam stop rule 'never'"):
        beam_search(Oracle(), src, src != PAD_ID, torch.tensor([5]), 2, 0.0, 1, stop="never")


# --------------------------------------------------------------------------- shared sentence rows


class _NoSharing:
    """A model whose states hide ``repeat_rows``: beam search gathers one copy per row."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> object:
        return self.model.encode(src, src_mask)

    def init_state(self, enc: object) -> object:
        return _Hidden(self.model.init_state(enc))

    def step(self, prev: torch.Tensor, state: _Hidden, need_weights: bool = False
             ) -> tuple[torch.Tensor, _Hidden, torch.Tensor | None]:
        logp, inner, attn = self.model.step(prev, state.inner, need_weights)
        return logp, _Hidden(inner), attn


class _Hidden:
    def __init__(self, inner: object) -> None:
        self.inner = inner

    def select(self, index: torch.Tensor) -> _Hidden:
        return _Hidden(self.inner.select(index))  # type: ignore[attr-defined]


def _peaked_model(name: str) -> torch.nn.Module:
    model = small_model(**CONFIGS[name])
    with torch.no_grad():  # a peaked output layer: beams diverge and end at different steps
        model.output.weight.mul_(8.0)
    return model


# coverage's state changes with each step of each row: it cannot be shared
SHARED = {name: not name.startswith("coverage") for name in CONFIGS}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("need_weights", [False, True])
def test_shared_sentence_rows_in_beam_search_change_nothing(name: str, need_weights: bool
                                                            ) -> None:
    """A sentence's k beams share its encoder tensors (group = k); the hypotheses, scores and
    attention equal those of one gathered copy per row."""
    model = _peaked_model(name)
    torch.manual_seed(4)
    src = torch.randint(4, 20, (5, 9))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[1, 6:] = False
    src_mask[3, 4:] = False
    src = src.masked_fill(~src_mask, PAD_ID)
    max_len = torch.tensor([12, 7, 12, 5, 9])
    need = need_weights and name != "none"
    shared = beam_search(model, src, src_mask, max_len, 4, n_best=2, return_attention=need)
    gathered = beam_search(_NoSharing(model), src, src_mask, max_len, 4, n_best=2,  # type: ignore[arg-type]
                           return_attention=need)
    for a_sent, b_sent in zip(shared, gathered, strict=True):
        for a, b in zip(a_sent, b_sent, strict=True):
            assert a.tokens == b.tokens
            assert a.score == pytest.approx(b.score, abs=1e-4)
            if need:
                assert a.attention is not None and b.attention is not None
                torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grouped_state_select_with_any_index_falls_back_to_rows(name: str) -> None:
    """repeat_rows shares what it can; an index that splits a sentence's rows (not a beam
    reorder) still selects exactly, and a beam reorder stays grouped."""
    model = _peaked_model(name)
    src = torch.randint(4, 20, (3, 6))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    state = model.init_state(model.encode(src, src_mask))
    grouped = state.repeat_rows(3, 2)  # 6 rows, 2 per sentence
    plain = state.select(torch.arange(3).repeat_interleave(2))
    assert grouped.group == (2 if SHARED[name] else 1) and plain.group == 1
    prev = torch.randint(4, 20, (6,))
    with torch.no_grad():
        a, grouped, _ = model.step(prev, grouped)
        b, plain, _ = model.step(prev, plain)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        index = torch.tensor([5, 0, 3, 3])  # rows of three different sentences, one twice
        a, _, _ = model.step(prev[index], grouped.select(index))
        b, _, _ = model.step(prev[index], plain.select(index))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        reorder = torch.tensor([1, 1, 4, 5])  # two sentences, a beam reorder: stays grouped
        kept = grouped.select(reorder)
        if SHARED[name]:
            assert kept.group == 2 and kept.memory.size(0) == 2
        a, _, _ = model.step(prev[reorder], kept)
        b, _, _ = model.step(prev[reorder], plain.select(reorder))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
