"""Label-smoothed cross-entropy over the output vocabulary, computed in row blocks.

The same value and gradient as ``F.cross_entropy(logits.float(), target, ignore_index=pad,
label_smoothing=eps, reduction="sum")``, but the (N, V) float32 log-probabilities are never
materialised: the forward pass takes one block of rows at a time into a reused float32 buffer
(PyTorch's log-softmax kernel) for

    loss_i = -(1 - eps) log p_{i, y_i} - eps / V * sum_c log p_{i, c},

and the backward pass writes the gradient block by block (the softmax kernel again),

    dL/dx_{i, c} = g * keep_i * (softmax(x_i)_c - eps / V - (1 - eps) [c = y_i]),

so each block's float32 working copy stays in the CPU cache. With bf16 logits (autocast) no
full-size float32 copy is made either. Why: profiled on the benchmark Transformer, PyTorch's
path (log-softmax, NLL, smoothing sum and their backward: six passes over 4,096 x 8,000
floats) took 280 ms per update (fp32, one thread) and 375 ms with bf16 logits; blocks of 64
rows take 140 ms for both. The softmax kernels, rather than log-sum-exp and exp by hand, halve
the rest again (55 -> 26 ms per update at 2 threads, 4,096 x 8,000).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# a block's float32 working copy: 2 MB (65 rows of an 8,000-piece vocabulary) fits the L2
# cache; a small vocabulary gets more rows per block, so few blocks (and few Python-level ops)
BLOCK_FLOATS = 64 * 8192


def block_rows(vocab: int) -> int:
    """Rows per block for a vocabulary of ``vocab`` entries (at least 1)."""
    return max(1, BLOCK_FLOATS // vocab)


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, eps: float, ignore_index: int
                ) -> Tensor:
        n, vocab = logits.shape
        keep = target != ignore_index
        # an ignored row's target may be any id (the pad id itself): gather a valid one
        safe_target = torch.where(keep, target, torch.zeros_like(target))
        loss = torch.empty(n, dtype=torch.float32, device=logits.device)
        step = block_rows(vocab)
        scratch = torch.empty(min(n, step), vocab, dtype=torch.float32,
                              device=logits.device)  # one block's log-probs, reused
        for start in range(0, n, step):
            rows = slice(start, start + step)
            block = logits[rows]
            logp = torch.log_softmax(block, -1, dtype=torch.float32,
                                     out=scratch[: block.size(0)])
            # -(1 - eps) log p_y - eps / V sum_c log p_c
            loss[rows] = logp.gather(1, safe_target[rows, None]).squeeze(1).mul_(-(1.0 - eps))
            loss[rows] -= logp.sum(-1).mul_(eps / vocab)
        ctx.save_for_backward(logits, safe_target, keep)
        ctx.eps = eps
        return (loss * keep).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        logits, target, keep = ctx.saved_tensors
        eps: float = ctx.eps
        n, vocab = logits.shape
        grad = torch.empty_like(logits)
        scale = grad_output.float() * keep.float()  # (N,)
        in_place = logits.dtype == torch.float32
        step = block_rows(vocab)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            if in_place:  # float32: the softmax straight into its rows of grad, no copy
                block = torch.softmax(logits[rows], -1, out=grad[rows])
            else:  # bf16/fp16 logits: a float32 working block, rounded once at the end
                block = torch.softmax(logits[rows], -1, dtype=torch.float32)
            block.sub_(eps / vocab)  # softmax rows minus the smoothing mass
            block.scatter_add_(1, target[rows, None],
                               block.new_full((block.size(0), 1), -(1.0 - eps)))
            block.mul_(scale[rows, None])
            if not in_place:
                grad[rows] = block
        return grad, None, None, None


def smoothed_cross_entropy_sum(logits: Tensor, target: Tensor, eps: float,
                               ignore_index: int) -> Tensor:
    """Sum over rows of the label-smoothed cross-entropy; rows whose target is
    ``ignore_index`` count 0. logits (N, V) any float dtype, target (N,) int64 -> () float32.

    Row blocks on the CPU; on a GPU PyTorch's fused kernels (one launch, not one per block)."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits (N, V) and target (N,) expected, got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    if logits.device.type != "cpu":
        return F.cross_entropy(logits.float(), target, ignore_index=ignore_index,
                               label_smoothing=eps, reduction="sum")
    result: Tensor = _SmoothedCrossEntropy.apply(logits, target, eps, ignore_index)
    return result


# ------------------------------------------------------------ fused with the output layer

# Rows of hidden states per block of the fused output layer + loss: a (256, 8,000) float32
# block of logits (8 MB) stays in the cache for the softmax and both gradient products; 128 to
# 1,024 rows measured within 3% of each other on the benchmark Transformer's shapes.
FUSED_BLOCK_ROWS = 256


class _LinearSmoothedCrossEntropy(torch.autograd.Function):
    """Output layer and label-smoothed cross-entropy in one pass over row blocks, with the
    gradients computed during the forward pass (the loss is the last operation, so its
    gradient needs only the block at hand). See :func:`linear_smoothed_cross_entropy_sum`."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                eps: float, ignore_index: int, compute_dtype: torch.dtype, with_grad: bool
                ) -> Tensor:
        rows = (target != ignore_index).nonzero().squeeze(1)
        h = hidden.index_select(0, rows).to(compute_dtype)  # (n, D): real targets only
        y = target.index_select(0, rows)
        n, vocab = h.size(0), weight.size(0)
        if compute_dtype != torch.float32 and n > FUSED_BLOCK_ROWS:
            # oneDNN builds a kernel per product shape (~20 ms each for these): zero rows
            # bring the last block to the size of the others, so every block reuses the
            # kernels of the first. Zero rows add nothing to the weight's gradient; the loss,
            # the bias's gradient and the rows' gradients below leave them out.
            padded = -(-n // FUSED_BLOCK_ROWS) * FUSED_BLOCK_ROWS
            h, y = F.pad(h, (0, 0, 0, padded - n)), F.pad(y, (0, padded - n))
        w = weight.to(compute_dtype)
        w_t = w.t().contiguous()  # (D, V): the products' layout, transposed once, not per block
        b = None if bias is None else bias.to(compute_dtype)
        grad_h = torch.empty(h.size(0), h.size(1), dtype=torch.float32, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        logp = torch.empty(min(h.size(0), FUSED_BLOCK_ROWS), vocab, dtype=torch.float32,
                           device=h.device)
        for start in range(0, h.size(0), FUSED_BLOCK_ROWS):
            block = slice(start, start + FUSED_BLOCK_ROWS)
            h_block, y_block = h[block], y[block]
            real = min(n - start, h_block.size(0))  # the block's rows that are not padding
            logits = torch.mm(h_block, w_t) if b is None else torch.addmm(b, h_block, w_t)
            out = logp[: h_block.size(0)]
            # (a dtype argument makes the kernel write a temporary and copy it: only for bf16)
            p = (torch.log_softmax(logits, -1, out=out) if logits.dtype == torch.float32
                 else torch.log_softmax(logits, -1, dtype=torch.float32, out=out))
            # loss_i = -(1 - eps) log p_{i, y_i} - eps / V sum_c log p_{i, c}
            total -= ((1.0 - eps) * p[:real].gather(1, y_block[:real, None]).sum()
                      + (eps / vocab) * p[:real].sum())
            if not with_grad:
                continue
            # dL/dz = softmax - eps / V - (1 - eps) onehot(y): the softmax part here, the two
            # constant-shaped parts below as cheap (n, D) and (V, D) corrections
            p = p.exp_().to(compute_dtype)
            rows_out = grad_h[block]
            if compute_dtype == torch.float32:  # straight into the float32 results
                torch.mm(p, w, out=rows_out)
                grad_w.addmm_(p.t(), h_block)
            else:  # bf16 products, accumulated in float32
                rows_out.copy_(torch.mm(p, w))
                grad_w += torch.mm(p.t(), h_block)
            grad_b += p[:real].sum(0, dtype=torch.float32)
        if with_grad:
            _finish_gradients(ctx, hidden, weight, bias, rows, h[:n], y[:n], w, grad_h[:n],
                              grad_w, grad_b, eps)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        g = grad_output.float()
        return (grad_h * g, grad_w * g, None if grad_b is None else grad_b * g,
                None, None, None, None, None)


def _finish_gradients(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None,
                      rows: Tensor, h: Tensor, y: Tensor, w: Tensor, grad_h: Tensor,
                      grad_w: Tensor, grad_b: Tensor, eps: float) -> None:
    """Add the loss gradient's constant-shaped parts (-eps / V everywhere, -(1 - eps) at the
    targets) to the softmax parts summed over blocks, and save the three gradients on
    ``ctx``: h (n, D) the real rows of ``hidden`` (``rows`` their indices), y (n,)."""
    n, vocab = h.size(0), weight.size(0)
    h32 = h.float()
    grad_h -= (eps / vocab) * w.float().sum(0)
    grad_h -= (1.0 - eps) * w.float().index_select(0, y)
    grad_w -= (eps / vocab) * h32.sum(0)
    grad_w.index_add_(0, y, h32, alpha=-(1.0 - eps))
    grad_b -= (eps / vocab) * n
    grad_b.index_add_(0, y, grad_b.new_full((n,), -(1.0 - eps)))
    full_grad_h = hidden.new_zeros(hidden.shape).index_copy_(0, rows, grad_h.to(hidden.dtype))
    ctx.save_for_backward(full_grad_h, grad_w.to(weight.dtype),
                          None if bias is None else grad_b.to(bias.dtype))


def linear_smoothed_cross_entropy_sum(hidden: Tensor, weight: Tensor, bias: Tensor | None,
                                      target: Tensor, eps: float, ignore_index: int) -> Tensor:
    """``smoothed_cross_entropy_sum(F.linear(hidden, weight, bias), target, eps,
    ignore_index)`` without the (N, V) logits: hidden (N, D), weight (V, D), bias (V,) or
    None, target (N,) int64 -> () float32.

    Why: the output layer's logits and their gradient are the two largest tensors of a
    training step (4,096 x 8,000 floats, 131 MB each, in the benchmark Transformer); written
    to fresh memory and read back by the loss and by both gradient products, they cost more
    than the products' arithmetic. Here rows whose target is ``ignore_index`` (padding) are
    dropped first, and each block of the rest goes through the product, the log-softmax and
    the two gradient products while it is in the cache. Under CPU autocast the products run
    in the autocast dtype (bf16), the softmax in float32, as autocast would.

    On other devices: the plain output layer and :func:`smoothed_cross_entropy_sum`."""
    if hidden.dim() != 2 or target.shape != hidden.shape[:1]:
        raise ValueError(f"hidden (N, D) and target (N,) expected, got {tuple(hidden.shape)} "
                         f"and {tuple(target.shape)}")
    if hidden.device.type != "cpu":
        return smoothed_cross_entropy_sum(F.linear(hidden, weight, bias), target, eps,
                                          ignore_index)
    autocast = torch.is_autocast_enabled("cpu")
    compute_dtype = torch.get_autocast_dtype("cpu") if autocast else hidden.dtype
    with_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias))
    with torch.autocast("cpu", enabled=False):
        result: Tensor = _LinearSmoothedCrossEntropy.apply(
            hidden, weight, bias, target, eps, ignore_index, compute_dtype, with_grad)
    return result
