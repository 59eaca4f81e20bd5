"""ruff and mypy run as part of the test suite, so the README's one test command covers them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool, args", [
    ("ruff", ["check", "heedful", "tests", "benchmarks"]),
    ("mypy", []),
])
def test_code_health(tool: str, args: list[str]) -> None:
    exe = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    proc = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
