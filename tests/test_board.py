"""train.tensorboard: a tiny run's event files hold every figure of metrics.jsonl and the
attention heatmap of the first dev pair at each validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heedful.config import load_config
from heedful.training.trainer import train


@pytest.fixture(scope="module")
def board_run(tmp_path_factory: pytest.TempPathFactory, sample_files) -> Path:
    src, tgt = sample_files
    cfg = load_config(None, [
        "data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
        f"data.dev.src={src}", f"data.dev.tgt={tgt}", "data.dev_limit=4",
        "tokenizer.vocab_size=500", "model.embed_dim=16", "model.hidden_dim=16",
        "train.batch_tokens=600", "train.max_steps=4", "train.log_every=1",
        "train.valid_every=2", "train.tensorboard=true", "train.clip_norm=null"])
    run = tmp_path_factory.mktemp("board") / "run"
    train(cfg, run, progress=False)
    return run


def test_event_files_hold_the_training_and_dev_figures(board_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(board_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm", "dev/loss",
            "dev/ppl", "dev/bleu", "dev/chrf"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("dev/bleu")] == [2, 4]
    # the same figures as metrics.jsonl (its values are rounded)
    records = [json.loads(line) for line in (board_run / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "train_loss" in r]
    assert [e.value for e in events.Scalars("train/grad_norm")] == pytest.approx(
        [r["grad_norm"] for r in windows], abs=1e-4)
    assert all(r["grad_norm"] > 0 and r["train_seconds"] > 0 for r in windows)
    assert [e.value for e in events.Scalars("dev/loss")] == pytest.approx(
        [r["dev_loss"] for r in records if "dev_loss" in r], abs=1e-4)
    assert tags["images"] == ["attention/dev0"]
    images = events.Images("attention/dev0")
    assert [i.step for i in images] == [2, 4]
    assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_plot_draws_the_run(board_run: Path, tmp_path: Path, capsys) -> None:
    from heedful.cli import main

    out = tmp_path / "curves.png"
    assert main(["plot", str(board_run), str(board_run), "-o", str(out), "--x", "time"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert str(out) in capsys.readouterr().out

