"""Linear layers on oneDNN's matrix kernels on the CPU, where PyTorch's float32 default is slower.

Why: in float32 on the CPU, ``F.linear`` and ``mm`` call MKL's sgemm, and MKL runs its AVX2
code on processors that are not Intel's. On an AMD Zen 5 (full-width AVX-512, the project's
machine) that is half the chip: at 2 threads, (3,700 x 256) x (256 x 1,024) runs at ~213
GFLOP/s through MKL and ~470 GFLOP/s through oneDNN's AVX-512 brgemm kernels, with the same
float32 arithmetic (relative differences ~1e-6, as between any two summation orders).
PyTorch reaches oneDNN from dense float32 tensors on two paths, and :func:`linear` takes them:

* no gradient needed (decoding, validation): ``torch.ops.mkldnn._linear_pointwise``, oneDNN's
  inner product;
* training: a 1 x 1 convolution over a (1, K, M, 1) channels-last view of the (M, K) input —
  the same product, and PyTorch's oneDNN convolution brings its own backward (grad input,
  grad weight, grad bias in oneDNN too). Forward + backward, varying M as token batches do:
  1.4-1.6x MKL's rate.

Which library runs is decided once per process (:func:`cpu_gemm_backend`): ``HEEDFUL_CPU_GEMM``
= ``onednn`` or ``mkl`` forces one; ``auto`` (the default) times one product both ways and
keeps MKL unless oneDNN is at least 1.25x faster — on Intel CPUs, where MKL runs AVX-512
itself, nothing changes. bf16 autocast, other dtypes and devices always take ``F.linear``
(bf16 products already run on oneDNN).

:class:`Linear` is ``nn.Linear`` with this forward: same parameters, same state_dict keys.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GEMM_VARIABLE = "HEEDFUL_CPU_GEMM"
GEMM_CHOICES = ("auto", "onednn", "mkl")
# oneDNN is picked by ``auto`` only when clearly faster: a measurement of a few milliseconds
# must not flip the choice on a machine where the two are equal.
AUTO_MARGIN = 1.25
# Below these sizes oneDNN's per-call set-up outweighs its faster kernel (forward + backward
# at 2 threads: 64 x 256 x 256 0.87x MKL's speed, 128 rows 1.05x, 512 rows 1.5x; a product
# with one output column, such as the additive attention's energy, 0.2-0.9x), so MKL keeps
# them: the per-step products of a recurrent decoder's input feeding, single-score layers.
MIN_ROWS = 128
MIN_OUT_FEATURES = 16
# Under CPU autocast the rows of a product are padded to a multiple of this, so that oneDNN's
# per-shape kernels are reused from one batch to the next (see _bucketed_autocast_linear).
ROW_BUCKET = 256

_backend: str | None = None


def cpu_gemm_backend() -> str:
    """``"onednn"`` or ``"mkl"``: which library runs float32 linear layers on the CPU.

    Read from ``HEEDFUL_CPU_GEMM`` (``auto`` measures, see the module doc) on the first call
    and kept for the process.

    Raises:
        ValueError: ``HEEDFUL_CPU_GEMM`` is set to something else than auto, onednn or mkl.
    """
    global _backend
    if _backend is None:
        requested = requested_backend()
        if not torch.backends.mkldnn.is_available():
            _backend = "mkl"
        elif requested == "auto":
            _backend = "onednn" if measure_speedup() >= AUTO_MARGIN else "mkl"
        else:
            _backend = requested
    return _backend


def requested_backend() -> str:
    """``HEEDFUL_CPU_GEMM`` as set (``auto`` when unset), checked but not measured.

    Raises:
        ValueError: it is set to something else than auto, onednn or mkl.
    """
    requested = os.environ.get(GEMM_VARIABLE, "auto").strip().lower() or "auto"
    if requested not in GEMM_CHOICES:
        raise ValueError(f"{GEMM_VARIABLE}={os.environ[GEMM_VARIABLE]!r}: choose one of "
                         f"{', '.join(GEMM_CHOICES)}")
    return requested


def reset_cpu_gemm_backend() -> None:
    """Forget the choice, so the next linear layer reads ``HEEDFUL_CPU_GEMM`` again (tests)."""
    global _backend
    _backend = None


def measure_speedup(rows: int = 1024, dim: int = 256, out_dim: int = 1024,
                    repeats: int = 5) -> float:
    """MKL's time / oneDNN's time for one (rows x dim) x (dim x out_dim) float32 product at the
    current thread count (best of ``repeats`` each, after one warm-up call; ~10 ms in all)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=gen)
    w = torch.randn(out_dim, dim, generator=gen)

    def best(fn: Callable[[], Tensor]) -> float:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    with torch.inference_mode():
        mkl = best(lambda: F.linear(x, w))
        onednn = best(lambda: _inference_linear(x, w, None))
    return mkl / onednn


def _inference_linear(x2d: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """(M, K) x (N, K)^T + b on oneDNN's inner product; no autograd."""
    return torch.ops.mkldnn._linear_pointwise(x2d, weight.contiguous(), bias, "none", [], "")


def _training_linear(x2d: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """(M, K) x (N, K)^T + b as a 1 x 1 convolution on oneDNN, differentiable.

    (M, K) row-major is, untouched in memory, a channels-last image of K channels, M rows and
    one column: (1, K, M, 1) with strides (M K, 1, K, K). The convolution's output keeps that
    layout, so (1, N, M, 1) channels-last is the (M, N) row-major result, again without a copy.
    """
    m, k = x2d.shape
    n = weight.size(0)
    image = x2d.contiguous().view(1, m, 1, k).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight.contiguous().view(n, k, 1, 1), bias)
    return out.permute(0, 2, 3, 1).reshape(m, n)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: x (..., K), weight (N, K), bias (N,) -> (..., N).

    On oneDNN where :func:`cpu_gemm_backend` says so and the call is float32 on the CPU outside
    autocast, with at least ``MIN_ROWS`` rows and ``MIN_OUT_FEATURES`` outputs; under CPU
    autocast with the rows padded to a bucket (:func:`_bucketed_autocast_linear`); otherwise
    exactly ``F.linear``."""
    if x.device.type == "cpu" and x.dim() >= 2 and torch.is_autocast_enabled("cpu"):
        return _bucketed_autocast_linear(x, weight, bias)
    if not (x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() >= 2
            and x.numel() >= MIN_ROWS * x.size(-1) and weight.size(0) >= MIN_OUT_FEATURES
            and not torch.is_autocast_enabled("cpu")
            and cpu_gemm_backend() == "onednn"):
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.size(-1))
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    out = (_training_linear if needs_grad else _inference_linear)(x2d, weight, bias)
    return out.view(*lead, weight.size(0))


def _bucketed_autocast_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` under CPU autocast (bf16: oneDNN's AMX / AVX512-BF16 kernels) with the row
    count padded up to a multiple of ``ROW_BUCKET`` (inputs of at least ``ROW_BUCKET`` rows).

    Why: oneDNN compiles a kernel per shape, and token batches bring new row counts almost
    every update: in the benchmark Transformer ~47 kernels a step were compiled, 75-135 ms of
    a ~0.6 s bf16 update (``ONEDNN_VERBOSE=all``). Padded rows are zeros; their outputs are
    cut off, so values and gradients are those of the unpadded product."""
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.size(-1))
    rows = x2d.size(0)
    padded = -(-rows // ROW_BUCKET) * ROW_BUCKET
    if rows < ROW_BUCKET or padded == rows:
        return F.linear(x, weight, bias)
    x2d = F.pad(x2d.to(torch.get_autocast_dtype("cpu")), (0, 0, 0, padded - rows))
    return F.linear(x2d, weight, bias)[:rows].view(*lead, weight.size(0))


class Linear(nn.Linear):
    """``nn.Linear`` whose product runs through :func:`linear` (oneDNN on the CPU where faster).

    Parameters, initialisation and state_dict keys are ``nn.Linear``'s, so checkpoints do not
    know the difference."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def as_plain_linear(module: nn.Module) -> nn.Module:
    """Turn every :class:`Linear` in ``module`` into a plain ``nn.Linear`` in place (for tools
    that match the exact class, such as dynamic int8 quantization); returns ``module``."""
    for sub in module.modules():
        if type(sub) is Linear:
            sub.__class__ = nn.Linear  # type: ignore[assignment]
    return module
