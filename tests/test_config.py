"""Strict config loading: every error names the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from heedful.config import ConfigError, load_config
from heedful.presets import PRESETS, get_preset


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load() -> None:
    cfg = load_config()
    assert cfg.model.attention == "scaled_dot"
    assert cfg.model.input_feeding is True
    assert cfg.data.dataset == "bible-es-en"


def test_unknown_key_names_closest_valid_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'model.hiden_dim'; did you mean "
                                          r"'model.hidden_dim'\?"):
        load_config(write(tmp_path, "model:\n  hiden_dim: 128\n"))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  lr: 0.1\n"))


def test_wrong_type_names_key_path_and_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.hidden_dim: Input should be a valid integer"):
        load_config(write(tmp_path, "model:\n  hidden_dim: big\n"))


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", r"train.lr: Input should be greater than 0"),
    ("model.dropout=1.0", r"model.dropout: Input should be less than 1"),
    ("decode.beam_size=0", r"decode.beam_size: Input should be greater than 0"),
    ("model.hidden_dim=-5", r"model.hidden_dim: Input should be greater than 0"),
    ("model.attention=luong", r"model.attention: Input should be 'none', 'dot'"),
])
def test_out_of_range_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_overrides_are_yaml_typed() -> None:
    cfg = load_config(None, ["model.hidden_dim=128", "train.clip_norm=null", "model.rnn_type=gru"])
    assert cfg.model.hidden_dim == 128
    assert cfg.train.clip_norm is None
    assert cfg.model.rnn_type == "gru"


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match="override 'model.hidden_dim' is not of the form"):
        load_config(None, ["model.hidden_dim"])


def test_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid YAML") as err:
        load_config(write(tmp_path, "model: [unclosed\n"))
    assert "\n" not in str(err.value) and "at line 2, column 1" in str(err.value)
    # a tag PyYAML cannot convert raises a Python error inside the safe loader
    with pytest.raises(ConfigError, match="a tagged value .* cannot be converted"):
        load_config(write(tmp_path, "name: !!timestamp 2001-12-14\n  - a\n"))


@pytest.mark.parametrize("item", [".=1", "a..b=1", "=3", "model.=2"])
def test_override_keys_with_empty_parts_are_named(item: str) -> None:
    with pytest.raises(ConfigError, match="is not a dotted key path"):
        load_config(None, [item])


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("overrides, message", [
    (["model.attention=multihead"], "model.attention_heads is required for attention: multihead"),
    (["model.attention_heads=4"], "model.attention_heads applies only to attention: multihead"),
    (["model.attention=none"], "model.input_feeding must be false with attention: none"),
    (["model.tie_output=true"], "model.tie_output needs model.embed_dim == model.hidden_dim"),
    (["data.dataset=null"], "data.train is required when data.dataset is null"),
    (["model.attention=local"], "model.local_window is required for attention: local"),
    (["model.local_window=3"], "model.local_window applies only to attention: local"),
    (["model.attention=coverage"], "model.coverage_loss_weight is required for attention: cov"),
    (["model.coverage_loss_weight=1"], "model.coverage_loss_weight applies only to attention: c"),
])
def test_cross_field_checks(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name: str, tmp_path: Path) -> None:
    from heedful.config import save_config

    cfg = get_preset(name)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("overrides, message", [
    (["decode.n_best=6"], r"decode: n_best \(6\) cannot exceed beam_size \(5\)"),
    (["decode.beam_size=2", "decode.repetition_penalty=1.2"], "apply to greedy search"),
])
def test_decoding_rules_fail_when_the_config_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_base_config_keeps_its_architecture() -> None:
    from heedful.config import Config
    from heedful.nn.transformer import TransformerConfig

    model = TransformerConfig(attention="multihead", attention_heads=2, ff_dim=32, embed_dim=16,
                              hidden_dim=16)  # arch left at its default
    cfg = load_config(None, ["train.max_steps=3"], base=Config(model=model))
    assert cfg.model == model and cfg.train.max_steps == 3


def test_switching_a_presets_architecture_drops_only_the_presets_foreign_keys() -> None:
    switch = ["model.arch=transformer", "model.attention=multihead", "model.ff_dim=256",
              "model.attention_heads=4",
              "model.embed_dim=64", "model.hidden_dim=64"]
    cfg = load_config(None, switch, base=get_preset("speech-digits"))
    assert cfg.model.arch == "transformer" and cfg.model.dropout == 0.1  # shared keys stay
    with pytest.raises(ConfigError, match="model.rnn_type applies only to model.arch: rnn"):
        load_config(None, [*switch, "model.rnn_type=gru"], base=get_preset("speech-digits"))
    with pytest.raises(ConfigError, match="unknown key 'model.rnn_typo'"):  # a whole section
        load_config(None, [*switch, "model={arch: transformer, rnn_typo: 1}"],
                    base=get_preset("speech-digits"))


def test_the_benchmark_transformer_keeps_the_peers_shape_whatever_transformer_small_is() -> None:
    from heedful.presets import bench_config

    bench, small = bench_config("transformer").model, get_preset("transformer-small").model
    shape = ("embed_dim", "ff_dim", "encoder_layers", "decoder_layers", "attention_heads")
    assert [getattr(bench, k) for k in shape] == [256, 1024, 3, 3, 4]  # the peers' shape
    assert [getattr(small, k) for k in shape] != [getattr(bench, k) for k in shape]


@pytest.mark.parametrize("pair", ["de-en", "en-de"])
def test_the_multi30k_configs_point_a_preset_at_multi30k(pair: str) -> None:
    root = Path(__file__).resolve().parent.parent
    src, tgt = pair.split("-")
    cfg = load_config(root / "configs" / f"multi30k-{pair}.yaml", [],
                      base=get_preset("transformer-small"))
    assert cfg.data.dataset is None and cfg.model.ff_dim == 512  # the preset's model stays
    assert (cfg.data.train.src, cfg.data.train.tgt) == (f"data/multi30k/train.{src}.gz",
                                                        f"data/multi30k/train.{tgt}.gz")
    assert cfg.data.test.src == f"data/multi30k/test_2016_flickr.{src}.gz"
