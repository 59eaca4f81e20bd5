"""Long inputs: sentence splitting (``split_sentences``) keeps one output per input line, and
an input longer than the model takes is cut with a warning naming the line (an error with
``strict``), in the Python API and on the command line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from heedful.cli import main
from heedful.decoding.sentences import split_lines, split_sentences
from heedful.decoding.translator import Translator
from heedful.errors import DataError, LongInputWarning

VERSES = ["Y llamó Dios á la expansión Cielos: y fué la tarde y la mañana el día segundo.",
          "¿Conque Dios os ha dicho: No comáis de todo árbol del huerto?",
          "Y el cuarto río es el Eufrates."]


def test_split_lines_keeps_every_line() -> None:
    lines = [" ".join(VERSES), "", "   ", "Sin punto final"]
    split = split_lines(lines, "es")
    assert split.sentences == [*VERSES, "Sin punto final"]
    assert split.owner == [0, 0, 0, 3]
    assert split.join(["a.", "b?", "c.", "d"]) == ["a. b? c.", "", "", "d"]
    assert split_sentences("El Dr. García llegó. Habló con la Sra. López.", "es") == [
        "El Dr. García llegó.", "Habló con la Sra. López."]


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.from_checkpoint("bible-es-en")


def test_split_sentences_translates_each_sentence_and_joins(translator: Translator) -> None:
    lines = [" ".join(VERSES), "", VERSES[2]]
    alone = [t.text for t in translator.translate(VERSES, beam_size=2)]
    out = translator.translate(lines, beam_size=2, split_sentences=True, split_language="es")
    assert [t.text for t in out] == [" ".join(alone), "", alone[2]]
    assert out[0].num_tokens > out[2].num_tokens > 0
    with pytest.raises(Exception, match="neither return_attention nor constraints"):
        translator.translate(lines, split_sentences=True, return_attention=True)


def test_a_cut_input_is_named_in_a_warning_or_an_error(translator: Translator) -> None:
    small = Translator(translator.model, translator.tokenizer, translator.config,
                       max_positions=16)
    lines = [VERSES[2], " ".join(VERSES)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = small.translate(lines, beam_size=1, first_line=7)
    messages = [str(w.message) for w in caught if w.category is LongInputWarning]
    assert len(messages) == 1
    assert messages[0].startswith("input line 8 has ")
    assert f"more than the 16 the model takes: its last {out[1].source_cut} were cut; " \
           "--split-sentences translates it sentence by sentence" in messages[0]
    assert out[0].source_cut == 0 and out[1].source_cut > 0
    with pytest.raises(DataError, match=r"input line 2 has \d+ subwords, more than the 16 the "
                                        r"model takes \(\d+ would be cut\); --split-sentences"):
        small.translate(lines, strict=True)


def test_cli_warns_about_a_cut_line_and_strict_stops(tmp_path: Path, capsys) -> None:
    src = tmp_path / "long.es"
    src.write_text("Hola.\n" + "hola " * 1100 + "\n", encoding="utf-8")
    fast = ["--beam-size", "1", "--max-len-a", "0.001", "--max-len-b", "2"]
    assert main(["translate", "bible-es-en", "-i", str(src), *fast]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert err.splitlines() == ["heedful: warning: input line 2 has 2,201 subwords, more than "
                                "the 1,024 the model takes: its last 1,177 were cut; "
                                "--split-sentences translates it sentence by sentence"]
    assert main(["translate", "bible-es-en", "-i", str(src), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["heedful: error: input line 2 has 2,201 subwords, more than "
                                "the 1,024 the model takes (1,177 would be cut); "
                                "--split-sentences translates it sentence by sentence"]


def test_http_split_sentences(translator: Translator) -> None:
    pytest.importorskip("fastapi", reason="heedful[serve] is not installed")
    from fastapi.testclient import TestClient

    from heedful.serving.server import create_app

    with TestClient(create_app({"m": translator})) as client:
        res = client.post("/translate", json={"texts": [" ".join(VERSES), ""], "beam_size": 2,
                                              "split_sentences": True})
        assert res.status_code == 200, res.text
        out = [t["translation"] for t in res.json()["translations"]]
        alone = [t.text for t in translator.translate(VERSES, beam_size=2)]
        assert out == [" ".join(alone), ""]
        assert res.json()["translations"][0]["source_cut"] == 0


def test_http_reports_a_cut_text_and_strict_refuses_it(translator: Translator) -> None:
    pytest.importorskip("fastapi", reason="heedful[serve] is not installed")
    from fastapi.testclient import TestClient

    from heedful.serving.server import ServeSettings, create_app

    body = {"texts": ["Hola.", "hola " * 1100], "beam_size": 1, "max_len_a": 0.001,
            "max_len_b": 2}
    with TestClient(create_app({"m": translator}, ServeSettings(max_chars=10_000))) as client:
        res = client.post("/translate", json=body)
        assert res.status_code == 200, res.text
        assert [t["source_cut"] for t in res.json()["translations"]] == [0, 1177]
        res = client.post("/translate", json={**body, "strict": True})
        assert res.status_code == 422
        assert "has 2,201 subwords, more than the 1,024 the model takes" in res.json()["detail"]
