"""Lexically constrained beam search: on the scripted oracle, on every architecture's tiny
model, and through the Python, command-line and HTTP APIs on the shipped model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_decoding import CONFIGS, Oracle, small_model, sources

from heedful.cli import main
from heedful.data import pad
from heedful.decoding.constrained import Progress, constrained_beam_search
from heedful.decoding.search import beam_search
from heedful.decoding.translator import Translator
from heedful.errors import DataError
from heedful.tokenizer import EOS_ID, PAD_ID

A, B = 4, 5
VERSES = ["Y llamó Dios á la expansión Cielos: y fué la tarde y la mañana el día segundo.",
          "Y salía de Edén un río para regar el huerto, y de allí se repartía en cuatro ramales."]


def contains(tokens: list[int], phrase: list[int]) -> bool:
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


def ends_a_word(tokens: list[int], phrase: list[int], glue: set[int]) -> bool:
    """Some occurrence of ``phrase`` is followed by no token of ``glue``."""
    n = len(phrase)
    return any(tokens[i : i + n] == phrase and (i + n == len(tokens) or tokens[i + n] not in glue)
               for i in range(len(tokens) - n + 1))


def test_oracle_takes_the_best_output_that_holds_the_phrase() -> None:
    # unconstrained best is B B EOS (.3645); the best with "A A" is A A EOS = .55 * .3 * .9
    src = torch.tensor([[A, EOS_ID]])
    hyps = constrained_beam_search(Oracle(), src, src != PAD_ID, torch.tensor([6]), [[[A, A]]],
                                   beam_size=2, alpha=0.0)[0]
    assert hyps[0].tokens == [A, A, EOS_ID]
    assert hyps[0].score == pytest.approx(math.log(0.55 * 0.3 * 0.9))


def test_progress_follows_phrases_and_drops_a_broken_one() -> None:
    phrases = [[7, 8, 9], [4]]
    p = Progress((False, False)).advance(7, phrases).advance(8, phrases)
    assert (p.inside, p.pos, p.met_tokens(phrases), p.wanted(phrases)) == (0, 2, 2, [9])
    p = p.advance(4, phrases)  # breaks the first phrase, meets the second
    assert (p.met, p.inside, p.met_tokens(phrases), p.ended) == ((False, True), None, 1, True)
    assert not p.advance(5, phrases).ended
    assert p.advance(7, phrases).advance(8, phrases).advance(9, phrases).all_met


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_phrase_appears_in_every_output(name: str) -> None:
    model = small_model(**CONFIGS[name])
    src, src_mask = pad(sources(), PAD_ID)
    wanted = [[[7, 8]], [[9], [12, 13, 14]], [[6], [6]]]
    glue = torch.zeros(20, dtype=torch.bool)
    glue[[10, 11, 15]] = True  # pieces that would continue a phrase's last word
    hyps = constrained_beam_search(model, src, src_mask, torch.full((3,), 12), wanted,
                                   beam_size=4, n_best=2, return_attention=name != "none",
                                   continues_word=glue)
    for nbest, phrases in zip(hyps, wanted, strict=True):
        assert len(nbest) == 2
        for h in nbest:
            assert all(contains(h.tokens, p) for p in phrases), (h.tokens, phrases)
            assert all(ends_a_word(h.tokens, p, {10, 11, 15}) for p in phrases), h.tokens
            assert h.tokens.count(6) >= 2 or phrases != [[6], [6]]
            if name != "none":
                assert h.attention is not None and h.attention.size(0) == len(h.tokens)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_without_constraints_the_output_is_unchanged(name: str) -> None:
    model = small_model(**CONFIGS[name])
    src, src_mask = pad(sources(), PAD_ID)
    caps = torch.full((3,), 12)
    plain = beam_search(model, src, src_mask, caps, 4, 1.0, 2)
    empty = constrained_beam_search(model, src, src_mask, caps, [[], [], []], 4, 1.0, 2)
    for p, e in zip(plain, empty, strict=True):
        assert [h.tokens for h in p] == [h.tokens for h in e]
        assert [h.score for h in p] == pytest.approx([h.score for h in e], abs=1e-5)


def test_constraints_longer_than_the_cap_are_an_error() -> None:
    model = small_model()
    src, src_mask = pad(sources(), PAD_ID)
    with pytest.raises(ValueError, match=r"sentence 1: its constraints take 5 tokens, more "
                                         r"than its output cap \(4\)"):
        constrained_beam_search(model, src, src_mask, torch.full((3,), 4),
                                [[], [[7, 8, 9], [10, 11]], []], beam_size=2)


# ----------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.from_checkpoint("bible-es-en")


def test_translator_honours_phrases_and_leaves_other_lines_alone(translator: Translator
                                                                  ) -> None:
    plain = translator.translate(VERSES, beam_size=3)
    out = translator.translate(VERSES, beam_size=3, constraints=[["heaven", "evening"], []])
    assert "heaven" in out[0].text and "evening" in out[0].text
    assert out[1].text == plain[1].text


def test_translator_constraint_errors_name_the_line(translator: Translator) -> None:
    with pytest.raises(DataError, match="input line 2: its constraints take .* subwords, more "
                                        "than its output may have .*raise --max-len-b"):
        translator.translate(VERSES, constraints=[[], ["and " * 80]], max_len_b=2)
    with pytest.raises(DataError, match=r"one list of phrases per line \(2 lines\)"):
        translator.translate(VERSES, constraints=[["heaven"]])
    with pytest.raises(DataError, match="non-empty phrases"):
        translator.translate(VERSES, constraints=[[""], []])


def test_cli_constraints_file(tmp_path: Path, capsys) -> None:
    src, cons, bad = tmp_path / "in.es", tmp_path / "c.jsonl", tmp_path / "bad.jsonl"
    src.write_text("\n".join(VERSES) + "\n", encoding="utf-8")
    cons.write_text('["heaven"]\n[]\n', encoding="utf-8")
    bad.write_text('["heaven"]\nheaven\n', encoding="utf-8")
    assert main(["translate", "bible-es-en", "-i", str(src), "--constraints", str(cons),
                 "--beam-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "heaven" in lines[0]
    assert main(["translate", "bible-es-en", "-i", str(src), "--constraints", str(bad)]) == 2
    assert f"heedful: error: {bad}:2: not JSON" in capsys.readouterr().err
    cons.write_text('["heaven"]\n', encoding="utf-8")
    assert main(["translate", "bible-es-en", "-i", str(src), "--constraints", str(cons)]) == 2
    assert ("heedful: error: the constraints end after line 1 but the input goes on"
            in capsys.readouterr().err)


def test_http_constraints(translator: Translator) -> None:
    pytest.importorskip("fastapi", reason="heedful[serve] is not installed")
    from fastapi.testclient import TestClient

    from heedful.serving.server import create_app

    with TestClient(create_app({"m": translator})) as client:
        res = client.post("/translate", json={"texts": VERSES[:1], "beam_size": 2,
                                              "constraints": [["heaven"]]})
        assert res.status_code == 200, res.text
        assert "heaven" in res.json()["translations"][0]["translation"]
        res = client.post("/translate", json={"texts": VERSES, "constraints": [["heaven"]]})
        assert res.status_code == 422
        assert "one list of phrases per text (2 texts)" in res.json()["detail"]
