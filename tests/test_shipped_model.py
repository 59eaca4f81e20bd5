"""The model shipped with the package works by name, with no training."""

from __future__ import annotations

from pathlib import Path

from heedful.analysis.metrics import score_corpus
from heedful.cli import main
from heedful.data import load_split
from heedful.decoding.translator import SHIPPED_MODELS_DIR, Translator, resolve_run_dir


def test_shipped_model_is_small_and_found_by_name() -> None:
    path = resolve_run_dir("bible-es-en")
    assert path == SHIPPED_MODELS_DIR / "bible-es-en"
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size < 32 * 1024 * 1024
    assert not list(path.rglob("optimizer.safetensors"))


def test_existing_path_wins_over_shipped_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bible-es-en").mkdir()
    assert resolve_run_dir("bible-es-en") == Path("bible-es-en")


def test_shipped_model_translates_well() -> None:
    translator = Translator.from_checkpoint("bible-es-en")
    test = load_split(translator.config.data, "test")
    assert test is not None
    hyps = translator.translate_lines(test.src[:100], beam_size=5)
    assert score_corpus(hyps, test.tgt[:100]).bleu > 20


def test_shipped_model_cli(tmp_path: Path, capsys) -> None:
    png = tmp_path / "a.png"
    assert main(["attention", "bible-es-en", "En el principio crió Dios los cielos y la tierra.",
                 "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert "God" in out and png.stat().st_size > 5000
