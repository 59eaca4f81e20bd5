"""Which device a command runs its model on, checked before any work starts.

Every command that runs a model takes ``--device auto|cpu|cuda|cuda:N`` (training:
``train.device``). ``auto`` is the GPU where there is one (under torchrun: the rank's
LOCAL_RANK GPU), else the CPU. A device this machine lacks is a :class:`DeviceError` (one
``heedful: error:`` line), never torch's "invalid device ordinal" traceback halfway through.
"""

from __future__ import annotations

import os
import re

import torch

from heedful.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
AUTO_ENV = "HEEDFUL_AUTO_DEVICE"
"""Set to ``cpu``, ``auto`` means the CPU even where there is a GPU (the test suite sets it:
its tests assume the CPU unless they name ``cuda``; subprocesses inherit it)."""
_PATTERN = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(UserError, RuntimeError):
    """A device that this machine does not have, or a name that is not a device."""


def cuda_count() -> int:
    """How many CUDA devices torch sees here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str, key: str = "--device", local_rank: int = 0) -> torch.device:
    """The device ``name`` means on this machine.

    ``auto``: ``cuda:local_rank`` where CUDA is available (and :data:`AUTO_ENV` is not
    ``cpu``), else the CPU. ``cuda`` (no index):
    ``cuda:local_rank``. Raises :class:`DeviceError` naming ``key`` for a name that is not a
    device, CUDA asked for where there is none, or an index past the last GPU."""
    match = _PATTERN.match(name.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"{key}: {name!r} is not a device; use {DEVICE_CHOICES}")
    kind, index = match.group(1), match.group(2)
    count = cuda_count()
    if kind == "auto" and os.environ.get(AUTO_ENV, "").strip().lower() == "cpu":
        kind = "cpu"
    if kind == "cpu" or (kind == "auto" and count == 0):
        return torch.device("cpu")
    if count == 0:
        raise DeviceError(f"{key}: {name} asked for, but this machine has no CUDA GPU "
                          f"(torch {torch.__version__}, CUDA "
                          f"{'not built in' if torch.version.cuda is None else 'unavailable'}); "
                          "use cpu")
    ordinal = int(index) if index is not None else local_rank
    if ordinal >= count:
        what = f"GPU {ordinal}" if index is not None else f"GPU {ordinal} (LOCAL_RANK)"
        raise DeviceError(f"{key}: {what} asked for, but this machine has {count} GPU(s) "
                          f"(0..{count - 1}); with torchrun, --nproc_per_node must not exceed "
                          "the number of GPUs")
    return torch.device("cuda", ordinal)


def check_world_fits(world_size_on_node: int, device: torch.device,
                     key: str = "--nproc_per_node") -> None:
    """Refuse more ranks on this node than GPUs when training on CUDA."""
    if device.type == "cuda" and world_size_on_node > cuda_count():
        raise DeviceError(f"{key}: {world_size_on_node} ranks on this node but only "
                          f"{cuda_count()} GPU(s); one rank per GPU")


def configure_cuda_math(tf32: bool = True) -> None:
    """float32 matrix products in TensorFloat-32 on CUDA (``tf32``) or in full float32.

    ``set_float32_matmul_precision`` is the API both torch 2.11 and 2.13 keep; cuDNN's
    convolutions and RNNs follow ``cudnn.allow_tf32``. Call it only for CUDA work: on the
    CPU, "high" lets oneDNN use bf16 for float32 products on some CPUs."""
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32


def use_deterministic_kernels() -> None:
    """Deterministic kernels only, so a resumed or rerun training is bit-exact on a GPU too.

    cuBLAS needs a fixed workspace for that (``CUBLAS_WORKSPACE_CONFIG``, read when its first
    handle is made: call this before any CUDA work). Ops without a deterministic kernel warn
    rather than fail (``warn_only``): a run should not stop over one scatter."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
