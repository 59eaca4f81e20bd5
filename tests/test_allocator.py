"""heedful.allocator: freed memory is reused instead of faulted in again (glibc only)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from heedful.allocator import retain_freed_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt")

# a fresh process each time: the setting is process-wide and cannot be undone
_PROBE = """
import resource, sys, torch
from heedful.allocator import retain_freed_memory
took = retain_freed_memory() if sys.argv[1] == "retain" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # 64 MB, as a logits tensor: above glibc's mmap threshold
    x = torch.ones(16 << 20); del x
before = faults()
for _ in range(5):
    x = torch.ones(16 << 20); del x
print(took, faults() - before)
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, env={**os.environ, **(env or {})})
    took, faults = done.stdout.split()
    return took == "True", int(faults)


def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    took, retained = _probe("retain")
    assert took
    _, system = _probe("system")
    # five fresh 64 MB blocks fault in ~5 x 16,384 pages; reused ones almost none
    assert system > 40_000
    assert retained < system / 10


def test_heedful_malloc_system_leaves_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MALLOC", "system")
    assert retain_freed_memory() is False
    took, faults = _probe("retain", {"HEEDFUL_MALLOC": "system"})
    assert not took and faults > 40_000
