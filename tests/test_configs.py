"""The YAML examples in configs/ are valid, and the tiny one trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from heedful.cli import main
from heedful.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_is_valid(path: Path) -> None:
    load_config(path)


def test_tiny_config_trains(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["train", "configs/tiny.yaml", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "best").exists()
