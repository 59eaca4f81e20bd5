"""Training pieces: schedules, plateau, early stopping, accumulation, tokenizer options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heedful.config import TrainConfig, load_config
from heedful.decoding.translator import Translator
from heedful.training.schedule import Plateau, learning_rate, plateau_update
from heedful.training.trainer import train


def test_constant_with_warmup() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert learning_rate(cfg, 1, 1.0, 256) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10, 1.0, 256) == pytest.approx(1e-3)
    assert learning_rate(cfg, 1000, 1.0, 256) == pytest.approx(1e-3)


def test_noam_peaks_at_warmup() -> None:
    cfg = TrainConfig(lr=1.0, schedule="noam", warmup_steps=100)
    peak = learning_rate(cfg, 100, 1.0, 256)
    assert peak == pytest.approx(256 ** -0.5 * 100 ** -0.5)
    assert learning_rate(cfg, 50, 1.0, 256) < peak > learning_rate(cfg, 400, 1.0, 256)
    assert learning_rate(cfg, 400, 1.0, 256) == pytest.approx(peak / 2)


def test_inverse_sqrt_decay() -> None:
    cfg = TrainConfig(lr=1e-3, schedule="inverse_sqrt", warmup_steps=100)
    assert learning_rate(cfg, 100, 1.0, 256) == pytest.approx(1e-3)
    assert learning_rate(cfg, 400, 1.0, 256) == pytest.approx(5e-4)


def test_plateau_halves_after_patience() -> None:
    cfg = TrainConfig(lr=1e-3, schedule="plateau", plateau_patience=1, plateau_factor=0.5)
    state = Plateau(scale=1.0, best=None, bad=0)
    for value in (10.0, 9.0, 8.0):  # BLEU getting worse
        state = plateau_update(cfg, state, value, higher_better=True)
    assert state.scale == 0.5
    assert learning_rate(cfg, 50, state.scale, 256) == pytest.approx(5e-4)


def tiny(sample_files, *extra: str):
    src, tgt = sample_files
    return load_config(None, [
        "data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
        f"data.dev.src={src}", f"data.dev.tgt={tgt}", "data.dev_limit=20",
        "tokenizer.vocab_size=500", "model.embed_dim=16", "model.hidden_dim=16",
        "train.batch_tokens=800", *extra])


def test_early_stopping_with_patience(tmp_path: Path, sample_files) -> None:
    cfg = tiny(sample_files, "train.lr=1e-9", "train.max_steps=40", "train.valid_every=2",
               "train.patience=2", "train.early_stopping_metric=loss")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.stopped_because.startswith("early stopping")
    assert result.steps < 40


def test_gradient_accumulation_counts_updates(tmp_path: Path, sample_files) -> None:
    cfg = tiny(sample_files, "train.accumulate=3", "train.max_steps=2", "train.valid_every=2")
    result = train(cfg, tmp_path / "run", progress=False)
    state = json.loads((result.best_checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert state["index"] == 6  # 3 batches per update


def test_max_epochs_stops_exactly_at_the_epoch_end(tmp_path: Path, sample_files) -> None:
    cfg = tiny(sample_files, "train.max_epochs=1", "train.valid_every=1000")
    result = train(cfg, tmp_path / "run", progress=False)
    state = json.loads((result.best_checkpoint / "trainer_state.json").read_text())
    assert result.stopped_because == "max_epochs"
    assert (state["epoch"], state["index"]) == (0, result.steps)  # one full epoch, no more


@pytest.mark.parametrize("extra, files", [
    (["tokenizer.joint=false"], {"spm.src.model", "spm.tgt.model"}),
    (["tokenizer.type=unigram"], {"spm.model"}),
])
def test_tokenizer_options(tmp_path: Path, sample_files, extra: list[str], files: set[str]
                           ) -> None:
    cfg = tiny(sample_files, *extra, "train.max_steps=1", "train.valid_every=1")
    train(cfg, tmp_path / "run", progress=False)
    assert files <= {p.name for p in (tmp_path / "run").iterdir()}
    [out] = Translator.from_checkpoint(tmp_path / "run").translate(["Y dijo Dios."], beam_size=2)
    assert isinstance(out.text, str)


def test_byte_fallback_never_produces_unk(tmp_path: Path, sample_files) -> None:
    cfg = tiny(sample_files, "train.max_steps=1", "train.valid_every=1")
    train(cfg, tmp_path / "run", progress=False)
    tok = Translator.from_checkpoint(tmp_path / "run").tokenizer
    ids = tok.encode_src(["Ωμέγα 🙂 日本"])[0]
    assert 1 not in ids  # UNK_ID
