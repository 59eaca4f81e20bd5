"""Sampling and the repetition controls."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.cli import main
from heedful.decoding.sampling import block_ngrams, filter_top_k_top_p, penalize_repeats
from heedful.decoding.translator import Translator

SRC = ["Y dijo Dios: Sea la luz: y fué la luz.", "Jesús lloró.",
       "En el principio crió Dios los cielos y la tierra."]


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.from_checkpoint("bible-es-en")


def test_top_k_1_sampling_is_greedy(translator: Translator) -> None:
    greedy = translator.translate(SRC, beam_size=1)
    sampled = translator.translate(SRC, sample=True, top_k=1, temperature=0.7, seed=3)
    assert [g.text for g in greedy] == [s.text for s in sampled]
    assert [g.score for g in greedy] == pytest.approx([s.score for s in sampled], abs=1e-4)


def test_sampling_is_seeded(translator: Translator) -> None:
    a = translator.translate_lines(SRC * 3, sample=True, temperature=1.5, seed=11)
    b = translator.translate_lines(SRC * 3, sample=True, temperature=1.5, seed=11)
    c = translator.translate_lines(SRC * 3, sample=True, temperature=1.5, seed=12)
    assert a == b
    assert a != c  # a hot sampler with another seed draws something else


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    keep = lambda p: torch.isfinite(filter_top_k_top_p(logits, top_p=p))[0].tolist()  # noqa: E731
    assert keep(0.5) == [True, False, False, False]    # 0.5 alone reaches 0.5
    assert keep(0.6) == [True, True, False, False]     # 0.5 + 0.3
    assert keep(0.8) == [True, True, False, False]     # exactly reached
    assert keep(0.81) == [True, True, True, False]
    assert keep(1.0) == [True, True, True, True]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12), st.floats(0.05, 1.0))
def test_top_p_property(weights: list[float], p: float) -> None:
    probs = torch.tensor([weights]) / sum(weights)
    kept = torch.isfinite(filter_top_k_top_p(probs.log(), top_p=p))[0]
    mass = float(probs[0][kept].sum())
    assert mass >= p - 1e-6  # enough mass
    # minimal: dropping the least likely kept token falls below p
    smallest = float(probs[0][kept].min())
    assert mass - smallest < p + 1e-6
    # and it is the most likely tokens that are kept
    assert float(probs[0][~kept].max()) <= smallest + 1e-9 if (~kept).any() else True


def test_top_k_keeps_k() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isfinite(filter_top_k_top_p(logits, top_k=2))[0].tolist() == [
        False, True, True, False]


def test_no_repeat_ngram_blocks_the_completing_token() -> None:
    lp = torch.zeros(1, 6)
    out = block_ngrams(lp, [[1, 2, 3, 1, 2]], 3)  # "1 2" was followed by 3 before
    assert out[0, 3] == float("-inf") and torch.isfinite(out[0, [0, 1, 2, 4, 5]]).all()
    assert torch.isfinite(block_ngrams(lp, [[1, 2]], 3)).all()
    assert block_ngrams(lp, [[4, 4]], 1)[0, 4] == float("-inf")  # unigrams: no token twice


def test_repetition_penalty_lowers_seen_tokens() -> None:
    lp = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    out = penalize_repeats(lp, [[0]], 1.5)
    assert out[0, 0] < lp[0, 0] and torch.equal(out[0, 1:], lp[0, 1:])


def test_greedy_with_no_repeat_never_repeats_an_ngram(translator: Translator) -> None:
    results = translator.translate(["y " * 30], beam_size=1, no_repeat_ngram_size=2,
                                   max_len_b=40)
    pieces = results[0].tgt_pieces  # the generated subwords themselves
    bigrams = list(itertools.pairwise(pieces))
    assert len(pieces) > 4 and len(bigrams) == len(set(bigrams))


def test_option_errors_are_clear(translator: Translator, capsys) -> None:
    with pytest.raises(Exception, match="apply to greedy search"):
        translator.translate(SRC, beam_size=5, repetition_penalty=1.2)
    assert main(["translate", "bible-es-en", "--sample", "--top-p", "1.5", "-i",
                 "/dev/null"]) == 2
    assert "top_p: Input should be less than or equal to 1" in capsys.readouterr().err
