"""Export to CTranslate2: the exported Transformer translates as heedful does (greedy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heedful.cli import main
from heedful.data import read_lines
from heedful.datasets import dataset_file
from heedful.decoding.translator import Translator

ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed")


def _train(run: Path, *extra: str) -> Path:
    src, tgt = dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
    data = ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]
    assert main(["train", *data, "tokenizer.vocab_size=500", "train.batch_tokens=1500",
                 "train.max_steps=60", "train.valid_every=60", "train.lr=0.003",
                 "decode.beam_size=1", *extra, "--run-dir", str(run), "--no-progress"]) == 0
    return run


TRANSFORMER = ["model.arch=transformer", "model.attention=multihead", "model.attention_heads=4",
               "model.embed_dim=64", "model.hidden_dim=64", "model.ff_dim=128",
               "model.encoder_layers=2", "model.decoder_layers=2",
               "model.input_feeding=false", "model.dropout=0.1"]


@pytest.mark.parametrize("variant", [
    ["model.pre_norm=true", "model.share_embeddings=true", "model.tie_output=true"],
    ["model.pre_norm=false", "model.positions=learned"],
], ids=["pre-norm-tied", "post-norm-learned-positions"])
def test_ctranslate2_greedy_agrees_with_heedful(tmp_path: Path, variant: list[str],
                                                 capsys) -> None:
    from heedful.serving.ctranslate2 import ct2_source_tokens

    run = _train(tmp_path / "run", *TRANSFORMER, *variant)
    out = tmp_path / "ct2"
    assert main(["export", str(run), str(out), "--format", "ctranslate2"]) == 0
    assert "ctranslate2" in capsys.readouterr().out
    translator = Translator.from_checkpoint(run)
    lines = read_lines(dataset_file("bible-es-en", "sample.es"))[:40]
    ours = translator.translate(lines, beam_size=1)
    engine = ctranslate2.Translator(str(out), device="cpu")
    opts = translator.decode_options()
    theirs = []
    for tokens in ct2_source_tokens(translator.tokenizer, lines):
        # the same output cap as heedful's (a x source length without EOS + b): an
        # undertrained model often runs to it
        cap = int(opts.max_len_a * (len(tokens) - 1)) + opts.max_len_b
        result = engine.translate_batch([tokens], beam_size=1, max_decoding_length=cap)[0]
        theirs.append(translator.tokenizer.tgt.decode(result.hypotheses[0]))
    agree = sum(a.text == b for a, b in zip(ours, theirs, strict=True)) / len(lines)
    assert agree >= 0.9, list(zip([o.text for o in ours], theirs, strict=True))[:5]


def test_rnn_models_cannot_be_exported(tmp_path: Path, capsys) -> None:
    run = _train(tmp_path / "rnn", "model.embed_dim=32", "model.hidden_dim=32",
                 "train.max_steps=2", "train.valid_every=2")
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "ct2"), "--format", "ctranslate2"]) == 2
    err = capsys.readouterr().err
    assert "is an RNN model (model.arch: rnn); CTranslate2 runs Transformer" in err
