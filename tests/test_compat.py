"""Run directories written before the model config was split by architecture (0.1.0) load
and translate exactly as 0.1.0 translated them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heedful.config import load_config
from heedful.decoding.translator import Translator
from heedful.nn.rnn import RNNConfig
from heedful.nn.transformer import TransformerConfig

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1"


@pytest.mark.parametrize("arch, config_class", [("rnn", RNNConfig),
                                                ("transformer", TransformerConfig)])
def test_0_1_run_directory_translates_identically(arch: str, config_class: type) -> None:
    run = FIXTURES / arch
    assert isinstance(load_config(run / "config.yaml").model, config_class)
    lines = (FIXTURES / "src.txt").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in
                (run / "expected.jsonl").read_text(encoding="utf-8").splitlines()]
    results = Translator.from_checkpoint(run).translate(lines, beam_size=3)
    assert [r.text for r in results] == [e["translation"] for e in expected]
    for r, e in zip(results, expected, strict=True):
        assert r.score == pytest.approx(e["score"], abs=1e-3)


def test_0_1_config_keys_of_another_architecture_with_a_real_value_are_refused(
        tmp_path: Path) -> None:
    """A 0.1 key that meant nothing for its architecture is dropped only at its old default;
    a real value is an error that says which architecture takes it."""
    import yaml

    from heedful.config import ConfigError

    raw = yaml.safe_load((FIXTURES / "rnn" / "config.yaml").read_text(encoding="utf-8"))
    raw["model"]["ff_dim"] = 1024
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="model.ff_dim applies only to model.arch: transformer"):
        load_config(path)
