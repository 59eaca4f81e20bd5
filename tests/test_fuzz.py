"""The fuzzing benchmark (benchmarks/fuzz.py) at a small scale: a few hundred generated inputs
over its five surfaces (corpus readers, configs, command lines, damaged run directories, the
HTTP API), and not one traceback, hang, unclear message or wrong result among them. The inputs
are derandomized: the same ones every run. ``python benchmarks/fuzz.py`` feeds over 10,000."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("heedful_fuzz_benchmark",
                                                  ROOT / "benchmarks" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fuzz = _load_benchmark()


def _check(surface, at_least: int) -> None:
    report = json.dumps(surface.report(), indent=1, ensure_ascii=False)
    assert surface.tried >= at_least, report
    assert surface.failures == 0, report
    assert surface.clean_refusals > 0, report  # the generated inputs do reach the refusals


def test_corpus_readers_give_a_value_or_a_data_error_naming_the_file(tmp_path: Path) -> None:
    _check(fuzz.fuzz_corpus(150, tmp_path), 150)


def test_configs_and_overrides_give_a_config_or_a_clear_config_error(tmp_path: Path) -> None:
    _check(fuzz.fuzz_config(120, tmp_path), 120)


def test_command_lines_exit_0_or_2_with_one_line(tmp_path: Path) -> None:
    surface = fuzz.fuzz_cli(40, tmp_path, subprocess_cases=1, tiny=0)
    _check(surface, 41)
    assert surface.notes["subprocess runs"] == 1


def test_damaged_run_directories_are_refused_by_name(tmp_path: Path) -> None:
    _check(fuzz.fuzz_rundirs(8, tmp_path), 8)


def test_http_api_answers_below_500_and_names_the_field(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    _check(fuzz.fuzz_http(60, tmp_path), 60)
