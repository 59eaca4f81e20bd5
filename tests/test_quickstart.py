"""The README's main job runs end to end (with a tiny budget)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heedful.cli import main


@pytest.mark.slow
def test_quickstart_with_tiny_budget(tmp_path: Path, capsys) -> None:
    run = tmp_path / "qs"
    assert main(["quickstart", "--minutes", "0.4", "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test BLEU" in out and "test chrF" in out
    assert "reference" in out and "heedful" in out
    assert (run / "attention.png").stat().st_size > 5000
