"""heedful.runtime.allocator: freed memory is reused instead of faulted in again (glibc only)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from heedful.runtime.allocator import (
    KERNEL_CACHE_VARIABLES,
    bound_kernel_caches,
    retain_freed_memory,
)
from heedful.runtime.precision import cpu_has_native_bf16

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt")

# a fresh process each time: the setting is process-wide and cannot be undone
_PROBE = """
import resource, sys, torch
from heedful.runtime.allocator import retain_freed_memory
took = retain_freed_memory() if sys.argv[1] == "retain" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):  # 64 MB, as a logits tensor: above glibc's mmap threshold
    x = torch.ones(16 << 20); del x
per_block = []
for _ in range(9):
    before = faults()
    x = torch.ones(16 << 20); del x
    per_block.append(faults() - before)
print(took, *per_block)
"""

_PAGES_PER_BLOCK = (64 << 20) // 4096  # 16,384 with 4 KiB pages


def _probe(mode: str, env: dict[str, str] | None = None) -> tuple[bool, list[int]]:
    """Run the probe in a fresh process: whether the setting took, page faults per 64 MB block."""
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, env={**os.environ, **(env or {})})
    took, *per_block = done.stdout.split()
    return took == "True", sorted(int(f) for f in per_block)


def _median(values: list[int]) -> int:
    return values[len(values) // 2]


def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    took, retained = _probe("retain")
    assert took
    _, system = _probe("system")
    # glibc's default maps every fresh 64 MB block anew: each faults in all its pages
    assert _median(system) > _PAGES_PER_BLOCK // 2, system
    # retained, a block reuses freed pages. The median, because one early block now and then
    # still lands on fresh heap (seen on CI: one of five blocks), which is not the steady state.
    assert _median(retained) < _PAGES_PER_BLOCK // 10, retained


def test_heedful_malloc_system_leaves_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MALLOC", "system")
    assert retain_freed_memory() is False
    took, per_block = _probe("retain", {"HEEDFUL_MALLOC": "system"})
    assert not took
    assert _median(per_block) > _PAGES_PER_BLOCK // 2, per_block


# bf16 products of 120 new shapes (rows 200, 208, ...): oneDNN keeps a kernel per shape
_SHAPES_PROBE = """
import sys, torch
from heedful.runtime.allocator import bound_kernel_caches
if sys.argv[1] == "bounded":
    print(bound_kernel_caches(16), file=sys.stderr)
torch.set_num_threads(1)
w = torch.randn(1024, 256, dtype=torch.bfloat16)
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
torch.randn(8, 256, dtype=torch.bfloat16) @ w.t()
start = rss_mb()
for rows in range(200, 200 + 8 * 120, 8):
    y = torch.randn(rows, 256, dtype=torch.bfloat16) @ w.t()
print(round(rss_mb() - start))
"""


def _growth_mb(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
    done = subprocess.run([sys.executable, "-c", _SHAPES_PROBE, mode], capture_output=True,
                          text=True, check=True, env=env)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not cpu_has_native_bf16(),
                    reason="this CPU has no native bf16, so no oneDNN bf16 kernels are cached")
def test_bounded_kernel_caches_stop_memory_growing_with_new_shapes() -> None:
    unbounded, bounded = _growth_mb("default"), _growth_mb("bounded")
    # measured here: ~88 MB unbounded, ~20 MB bounded
    assert unbounded > 40, unbounded
    assert bounded < unbounded / 2, (bounded, unbounded)


def test_a_users_kernel_cache_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "3")
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert bound_kernel_caches(64) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64",
                                       "LRU_CACHE_CAPACITY": "3"}
