"""The speed benchmark's configurations and measurements, and int8 dynamic quantization."""

from __future__ import annotations

import json

import pytest

from heedful.bench import bench_config, bench_training, format_table
from heedful.cli import main
from heedful.config import ConfigError
from heedful.decoding.translator import Translator
from heedful.nn.architectures import build_model, count_parameters
from heedful.runtime.precision import cpu_has_native_bf16


def test_rnn_configuration_is_the_peers_shape() -> None:
    cfg = bench_config("rnn")
    m, t = cfg.model, cfg.train
    assert (m.arch, m.rnn_type, m.attention, m.input_feeding) == ("rnn", "lstm", "additive", True)
    assert (m.embed_dim, m.hidden_dim, m.bidirectional, m.encoder_layers) == (128, 256, True, 1)
    assert m.encoder_hidden_dim is None  # 256 / 2 = 128 per direction
    assert (t.batch_tokens, t.lr, t.schedule, t.label_smoothing) == (4096, 1e-3, "constant", 0.1)
    assert cfg.tokenizer.vocab_size == 8000 and cfg.tokenizer.joint
    assert not m.attentional_tanh  # OpenNMT-py's mlp attention: a linear attentional state
    model = build_model(m, 8000, 8000)
    assert model.encoder.rnn.hidden_size == 128  # type: ignore[union-attr]


def test_attentional_tanh_off_is_the_same_state_before_tanh() -> None:
    import torch

    from heedful.nn.architectures import model_config

    base = dict(embed_dim=16, hidden_dim=32, attention="additive", input_feeding=False,
                dropout=0.0)
    torch.manual_seed(0)
    with_tanh = build_model(model_config(**base), 50, 50).eval()
    linear = build_model(model_config(**base, attentional_tanh=False), 50, 50).eval()
    linear.load_state_dict(with_tanh.state_dict())  # same weights, no extra parameters
    src = torch.randint(4, 50, (3, 7))
    tgt = torch.randint(4, 50, (3, 5))
    mask = torch.ones(3, 7, dtype=torch.bool)
    states = []
    for model in (with_tanh, linear):
        state = model.init_state(model.encode(src, mask))  # type: ignore[arg-type]
        out, _, _ = model.decoder(model.tgt_embed(tgt), state)  # type: ignore[operator]
        states.append(out)
    assert torch.allclose(states[0], torch.tanh(states[1]), atol=1e-6)


def test_transformer_configuration_is_the_peers_shape() -> None:
    cfg = bench_config("transformer")
    m = cfg.model
    assert (m.encoder_layers, m.decoder_layers, m.hidden_dim, m.attention_heads, m.ff_dim) == (
        3, 3, 256, 4, 1024)
    assert (cfg.train.lr, cfg.train.schedule) == (1e-3, "constant")
    # the peers' Transformer has 7.57-7.58 M parameters with their 8k vocabularies
    assert 7.0e6 < count_parameters(build_model(m, 8000, 8000)) < 8.0e6


def test_unknown_configuration() -> None:
    with pytest.raises(KeyError, match="unknown benchmark configuration 'lstm'"):
        bench_config("lstm")


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(
        not cpu_has_native_bf16(), reason="this CPU has no native bf16 (heedful refuses it)"))])
def test_training_measurement_counts_real_target_tokens(precision: str) -> None:
    cfg = bench_config("rnn")
    small = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"train_limit": 300}),
        "tokenizer": cfg.tokenizer.model_copy(update={"vocab_size": 500}),
        "train": cfg.train.model_copy(update={"batch_tokens": 1200})})
    report = bench_training(small, steps=3, warmup=1, precision=precision)
    assert report["train_steps_measured"] == 3 and report["train_precision"] == precision
    assert 0 < report["train_target_tokens_per_step"] <= report["train_padded_tokens_per_step"]
    assert report["train_padded_tokens_per_step"] <= 1200 * 1.01
    assert report["train_tokens_per_s_median"] > 0 and report["train_peak_rss_mb"] > 0
    table = format_table([{"config": "rnn", **report}])
    assert "train tok/s (median)" in table and "| rnn |" in table


def test_training_measurement_rejects_an_unknown_precision() -> None:
    with pytest.raises(ValueError, match="unknown precision 'int8'; choose fp32, bf16 or fp16"):
        bench_training(bench_config("rnn"), steps=1, warmup=0, precision="int8")
    # fp16 autocast is for GPUs (with loss scaling); the CPU is refused before any work
    with pytest.raises(ConfigError, match="--precision: fp16 runs on a CUDA GPU only"):
        bench_training(bench_config("rnn"), steps=1, warmup=0, precision="fp16")


def test_int8_quantization_keeps_the_shipped_model_close(capsys) -> None:
    from heedful.data import load_split

    fp32 = Translator.from_checkpoint("bible-es-en")
    test = load_split(fp32.config.data, "test")
    assert test is not None
    src = test.src[:40]
    base = [r.text for r in fp32.translate(src, beam_size=1)]
    int8 = Translator.from_checkpoint("bible-es-en").quantize("int8")
    assert "DynamicQuantized" in repr(int8.model)
    quant = [r.text for r in int8.translate(src, beam_size=1)]
    from heedful.analysis.metrics import score_corpus

    ref = test.tgt[:40]
    # int8 changes some words, not the model: close to its own fp32 outputs, similar BLEU
    assert score_corpus(quant, base).chrf > 60
    assert score_corpus(quant, ref).bleu > score_corpus(base, ref).bleu - 5
    with pytest.raises(ConfigError, match="unknown quantization"):
        Translator.from_checkpoint("bible-es-en").quantize("int4")


def test_translate_cli_quantize_flag(capsys, tmp_path) -> None:
    (tmp_path / "in.txt").write_text("Y dijo Dios.\n", encoding="utf-8")
    assert main(["translate", "bible-es-en", "--quantize", "int8", "--json",
                 "--beam-size", "2", "--input", str(tmp_path / "in.txt")]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["translation"]


def test_decoding_measurement_on_the_shipped_model() -> None:
    from heedful.bench import bench_decoding

    report = bench_decoding("bible-es-en", limit=8, beam_stop="top_finished")
    assert report["decode_sentences"] == 8 and report["decode_beam_stop"] == "top_finished"
    for name in ("greedy", "beam5"):
        assert report[f"{name}_sentences_per_s"] > 0 and report[f"{name}_tokens_per_s"] > 0
        assert report[f"{name}_bleu"] > 5  # a trained model: real translations
    table = format_table([{"config": "rnn", **report}])
    assert "beam-5 tok/s" in table


def test_the_command_lines_bench_names_are_the_presets() -> None:
    from heedful.cli.bench import BENCH_NAMES
    from heedful.presets import BENCH_CONFIGS, DEFAULT_BENCH, bench_config

    assert tuple(BENCH_NAMES) == BENCH_CONFIGS and set(DEFAULT_BENCH) <= set(BENCH_CONFIGS)
    base = bench_config("transformer-base")
    assert (base.model.embed_dim, base.model.ff_dim, base.model.encoder_layers,
            base.model.decoder_layers, base.train.batch_tokens) == (512, 2048, 6, 6, 16384)
