"""The block-wise label-smoothed cross-entropy equals PyTorch's, in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from heedful.nn import loss as loss_module
from heedful.nn.loss import smoothed_cross_entropy_sum


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_equals_torch_cross_entropy(dtype: torch.dtype, eps: float,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # 7 rows of 30 per block: several blocks and a ragged last one
    monkeypatch.setattr(loss_module, "BLOCK_FLOATS", 7 * 30)
    torch.manual_seed(0)
    logits = (torch.randn(45, 30) * 3).to(dtype).requires_grad_()
    target = torch.randint(1, 30, (45,))
    target[::4] = 0  # padding rows
    expect = F.cross_entropy(logits.float(), target, ignore_index=0, label_smoothing=eps,
                             reduction="sum")
    (expect_grad,) = torch.autograd.grad(expect, logits)
    got = smoothed_cross_entropy_sum(logits, target, eps, ignore_index=0)
    (got_grad,) = torch.autograd.grad(got * 2.0, logits)  # a non-unit upstream gradient
    assert got.dtype == torch.float32 and loss_module.block_rows(30) == 7
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-4)
    assert got_grad.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got_grad.float(), 2.0 * expect_grad.float(), rtol=tol, atol=tol)
    assert torch.all(got_grad[::4] == 0)  # padding rows get no gradient


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits \(N, V\) and target \(N,\) expected, got "
                                         r"\(2, 3, 4\) and \(2,\)"):
        smoothed_cross_entropy_sum(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long),
                                   0.1, 0)
