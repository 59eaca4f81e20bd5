"""Checkpoint averaging and ensemble decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heedful.checkpoint import CheckpointError, average_run, model_state
from heedful.cli import main
from heedful.datasets import dataset_file
from heedful.decoding.ensemble import Ensemble
from heedful.decoding.forced import force_decode
from heedful.decoding.translator import Translator

TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "train.batch_tokens=800", "train.valid_every=2", "train.log_every=2",
        "train.keep_last=3", "decode.beam_size=3", "train.max_steps=6"]
SRC = ["Y dijo Dios: Sea la luz.", "Jesús lloró.", "Y fué la tarde y la mañana el día primero."]


def _train(run: Path, *extra: str) -> Path:
    src, tgt = dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
    data = ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]
    assert main(["train", *data, *TINY, *extra, "--run-dir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ens")
    return _train(root / "a", "train.seed=1"), _train(root / "b", "train.seed=2",
                                                       "model.attention=general")


def test_average_is_the_mean_of_the_last_checkpoints(runs, tmp_path: Path, capsys) -> None:
    run = runs[0]
    assert main(["average", str(run), "--last", "2", "-o", str(tmp_path / "avg")]) == 0
    assert "step-00000004, step-00000006" in capsys.readouterr().out
    ckpts = run / "checkpoints"
    w4 = model_state(ckpts / "step-00000004" / "model.safetensors")
    w6 = model_state(ckpts / "step-00000006" / "model.safetensors")
    avg_ckpt = next((tmp_path / "avg" / "checkpoints").glob("step-*"))
    avg = model_state(avg_ckpt / "model.safetensors")
    for name in w4:
        torch.testing.assert_close(avg[name], (w4[name] + w6[name]) / 2)
    state = json.loads((avg_ckpt / "trainer_state.json").read_text())
    assert state["averaged_checkpoints"] == ["step-00000004", "step-00000006"]
    assert not (avg_ckpt / "optimizer.safetensors").exists()
    assert Translator.from_checkpoint(tmp_path / "avg").translate_lines(SRC[:1])  # usable


def test_average_needs_enough_checkpoints(runs, tmp_path: Path, capsys) -> None:
    assert main(["average", str(runs[0]), "--last", "5", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "has 3 intact checkpoint(s), fewer than --last 5" in err
    with pytest.raises(CheckpointError, match="at least 1"):
        average_run(runs[0], tmp_path / "y", 0)


def test_ensemble_of_one_model_twice_equals_the_model(runs) -> None:
    single = Translator.from_checkpoint(runs[0])
    double = Translator.from_checkpoints([runs[0], runs[0]])
    assert isinstance(double.model, Ensemble)
    for beam in (1, 3):
        a = single.translate(SRC, beam_size=beam)
        b = double.translate(SRC, beam_size=beam)
        assert [x.text for x in a] == [x.text for x in b]
        assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-4)


def test_ensemble_step_is_the_renormalised_mean_of_log_probs(runs) -> None:
    ta, tb = (Translator.from_checkpoint(r) for r in runs)
    ens = Translator.from_checkpoints(list(runs))
    src = ta.tokenizer.encode_src(SRC[:2])
    tgt = ta.tokenizer.encode_tgt(["And God said.", "Jesus wept."])
    fa = force_decode(ta.model, src, tgt)
    fb = force_decode(tb.model, src, tgt)
    fe = force_decode(ens.model, src, tgt)
    for a, b, e in zip(fa, fb, fe, strict=True):
        # the mean of log-probs is at most log(1) per step, so the ensemble is >= their mean
        assert e.log_prob >= (a.log_prob + b.log_prob) / 2 - 1e-4
    from heedful.data import pad
    from heedful.tokenizer import BOS_ID, PAD_ID

    src_t, mask = pad(src, PAD_ID)
    prev = torch.full((2,), BOS_ID)
    with torch.inference_mode():
        lp_a, _, _ = ta.model.step(prev, ta.model.init_state(ta.model.encode(src_t, mask)))
        lp_b, _, _ = tb.model.step(prev, tb.model.init_state(tb.model.encode(src_t, mask)))
        lp_e, _, att = ens.model.step(prev, ens.model.init_state(ens.model.encode(src_t, mask)),
                                      need_weights=True)
    torch.testing.assert_close(lp_e, torch.log_softmax((lp_a + lp_b) / 2, -1))
    assert att is not None and att.shape[0] == 2
    results = ens.translate(SRC, beam_size=3, return_attention=True)
    assert all(r.attention is not None for r in results)


def test_ensemble_cli_and_tokenizer_mismatch(runs, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.es"
    src.write_text("\n".join(SRC) + "\n", encoding="utf-8")
    assert main(["translate", str(runs[0]), str(runs[1]), "-i", str(src)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    other = _train(tmp_path / "c", "tokenizer.vocab_size=450")
    capsys.readouterr()
    assert main(["translate", str(runs[0]), str(other), "-i", str(src)]) == 2
    assert "their tokenizers differ" in capsys.readouterr().err
