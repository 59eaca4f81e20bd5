"""heedful plot: curves from metrics.jsonl, resumed runs, crash-cut records and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heedful.analysis.curves import read_curves
from heedful.cli import main


def write_run(run: Path, records: list[dict], tail: str = "") -> Path:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run


def window(step: int, loss: float) -> dict:
    return {"step": step, "train_loss": loss, "tok_per_s": 900.0, "lr": 1e-3, "grad_norm": 1.5,
            "train_seconds": 6.0 * step}


def valid(step: int, bleu: float) -> dict:
    return {"step": step, "epoch": 1, "dev_loss": 3.0, "dev_ppl": 20.1, "dev_bleu": bleu,
            "dev_chrf": 20.0, "lr": 1e-3, "train_seconds": 6.0 * step + 1}


def test_a_resumed_runs_repeated_steps_replace_the_old_ones(tmp_path: Path) -> None:
    # logged to step 3, crashed mid-record, resumed from the step-2 checkpoint
    run = write_run(tmp_path / "a", [window(1, 5.0), window(2, 4.0), valid(2, 1.0),
                                     window(3, 3.5)], tail='{"step": 4, "train_lo\n')
    with open(run / "metrics.jsonl", "a") as f:
        f.write("\n".join(json.dumps(r) for r in (window(3, 3.4), window(4, 3.0), valid(4, 2.0))))
    curves = read_curves(run, "time")
    assert [(s, v) for s, _, v in curves.points["train_loss"]] == [
        (1, 5.0), (2, 4.0), (3, 3.4), (4, 3.0)]
    assert [x for _, x, _ in curves.points["dev_bleu"]] == [13.0, 25.0]
    assert curves.skipped == [5]


def test_two_runs_in_one_picture(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a", [window(1, 5.0), valid(1, 1.0), window(2, 4.0)])
    b = write_run(tmp_path / "b", [window(1, 6.0), window(2, 5.0), valid(2, 3.0)])
    out = tmp_path / "pics" / "curves.png"
    assert main(["plot", str(a), str(b), "-o", str(out), "--json"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    printed = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in printed["runs"]] == ["a", "b"]
    assert printed["runs"][1]["curves"]["dev_bleu"] == [[2, 3.0]]


@pytest.mark.parametrize("content, message", [
    (None, "has no metrics.jsonl"),
    ('{"step": 1, "train_seconds": 2}\nnot json\n', "metrics.jsonl:2: not a JSON record"),
    ('{"step": 1, "train_seconds": 2}\n[1, 2]\n', "metrics.jsonl:2: not a metrics record"),
    ('{"step": 1, "train_loss": 2.0}\n', "metrics.jsonl:1: the record has no 'train_seconds'"),
])
def test_unreadable_runs_are_one_line_errors(tmp_path: Path, capsys, content: str | None,
                                             message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run), "--x", "time", "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heedful: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c.png").exists()


def test_a_missing_run_directory(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a directory" in capsys.readouterr().err
