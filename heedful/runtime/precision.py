"""Which mixed precision this machine can train in, checked before any work starts.

bf16 on the CPU is worth having only where the CPU computes in bf16 natively (AVX512-BF16 or
AMX: Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere (AVX2-only
CPUs, say) oneDNN has no bf16 kernels: its LSTM refuses to run at all ("could not create a
primitive descriptor for the LSTM forward propagation primitive"), and the matrix products
that do run are emulated and slower than fp32. So heedful says so up front instead of failing
mid-run or training slower than asked.
"""

from __future__ import annotations

import torch

from heedful.errors import ConfigError


def cpu_has_native_bf16() -> bool:
    """True if oneDNN can run bf16 kernels on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def check_cpu_precision(precision: str, key: str = "train.precision") -> None:
    """Raise ValueError naming ``key`` if ``precision`` cannot run on this CPU."""
    if precision == "bf16" and not cpu_has_native_bf16():
        raise ValueError(
            f"{key}: bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX) or a GPU; this "
            "CPU has none, so oneDNN cannot run the LSTM in bf16 and emulated bf16 products "
            "would be slower than fp32. Use fp32 here.")


PRECISIONS = ("fp32", "bf16", "fp16")
"""The arithmetic a model can run in: float32, or autocast to bfloat16 / float16."""


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``; None for fp32 (no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` with ``auto`` made concrete for ``device``: bf16 where it computes in bf16
    natively (:func:`cpu_has_native_bf16` on the CPU, ``torch.cuda.is_bf16_supported`` on a
    GPU), else fp32. Any other value is returned as it is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        with torch.cuda.device(device):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def check_precision(precision: str, device: torch.device, key: str = "--precision") -> None:
    """Raise :class:`~heedful.errors.ConfigError` naming ``key`` if ``precision`` cannot run
    on ``device``: fp16 runs on CUDA only (CPU autocast's fp16 kernels are emulated and
    slower than fp32), bf16 on the CPU only where :func:`check_cpu_precision` allows it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}: {precision!r} is not a precision; use fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}: fp16 runs on a CUDA GPU only, not on {device}; use fp32 "
                          "(or bf16 where the CPU has native bf16)")
    if device.type == "cpu":
        try:
            check_cpu_precision(precision, key)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def active_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device``'s type right now; None outside autocast."""
    kind = device.type
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)
