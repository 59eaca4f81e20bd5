"""ROUGE on hand-checked examples, and through `heedful evaluate --rouge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heedful.analysis.metrics import score_rouge
from heedful.cli import main


def test_rouge_by_hand() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat was on the mat" (6 words each):
    # unigrams: the x2, cat, on, mat match -> P = R = 5/6; bigrams: the-cat, on-the,
    # the-mat of 5 -> 3/5; longest common subsequence "the cat on the mat" -> 5/6
    r = score_rouge(["the cat sat on the mat"], ["the cat was on the mat"])
    assert r == {"rouge1": pytest.approx(83.33), "rouge2": pytest.approx(60.0),
                 "rougeL": pytest.approx(83.33)}


def test_rouge_averages_sentences_and_stems() -> None:
    # "cats" and "cat" share a stem; an empty hypothesis scores 0
    r = score_rouge(["cats", ""], ["cat", "a dog"])
    assert r["rouge1"] == pytest.approx(50.0) and r["rouge2"] == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        score_rouge(["a", "b"], ["a"])


def test_evaluate_reports_rouge(tmp_path: Path, capsys) -> None:
    src, ref = tmp_path / "s.es", tmp_path / "r.en"
    src.write_text("Jesús lloró.\n", encoding="utf-8")
    ref.write_text("Jesus wept.\n", encoding="utf-8")
    assert main(["evaluate", "bible-es-en", "--src", str(src), "--ref", str(ref), "--rouge",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["rouge"]) == {"rouge1", "rouge2", "rougeL"}
    assert 0 <= report["rouge"]["rouge1"] <= 100
