"""The block-wise label-smoothed cross-entropy equals PyTorch's, in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from heedful.nn import loss as loss_module
from heedful.nn.loss import linear_smoothed_cross_entropy_sum, smoothed_cross_entropy_sum


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


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fused_output_layer_equals_linear_then_loss(eps: float, with_bias: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Value and gradients (hidden, weight, bias) of the fused output layer + loss equal the
    output layer followed by the loss, in float32, across several blocks and padding rows."""
    monkeypatch.setattr(loss_module, "FUSED_BLOCK_ROWS", 8)  # 5 blocks, a ragged last one
    torch.manual_seed(0)
    hidden = torch.randn(45, 12, requires_grad=True)
    weight = (torch.randn(30, 12) * 0.3).requires_grad_()
    bias = (torch.randn(30) * 0.1).requires_grad_() if with_bias else None
    target = torch.randint(1, 30, (45,))
    target[::4] = 0  # padding rows
    params = [t for t in (hidden, weight, bias) if t is not None]
    expect = smoothed_cross_entropy_sum(F.linear(hidden, weight, bias), target, eps, 0)
    expect_grads = torch.autograd.grad(expect * 3.0, params)
    got = linear_smoothed_cross_entropy_sum(hidden, weight, bias, target, eps, 0)
    got_grads = torch.autograd.grad(got * 3.0, params)  # a non-unit upstream gradient
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-4)
    for g, e in zip(got_grads, expect_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert torch.all(got_grads[0][::4] == 0)  # padding rows get no gradient
    with torch.no_grad():  # validation: the loss alone, no gradient work
        torch.testing.assert_close(
            linear_smoothed_cross_entropy_sum(hidden, weight, bias, target, eps, 0), expect,
            rtol=1e-5, atol=1e-4)


def test_fused_output_layer_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CPU bf16 autocast the fused path is as close to float32 as autocast's own path
    (bf16 products, float32 softmax), and its gradients keep the inputs' dtypes."""
    monkeypatch.setattr(loss_module, "FUSED_BLOCK_ROWS", 16)
    torch.manual_seed(1)
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = (torch.randn(50, 32) * 0.2).requires_grad_()
    bias = torch.zeros(50, requires_grad=True)
    target = torch.randint(1, 50, (64,))
    reference = smoothed_cross_entropy_sum(F.linear(hidden, weight, bias), target, 0.1, 0)
    ref_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = smoothed_cross_entropy_sum(F.linear(hidden, weight, bias), target, 0.1, 0)
        fused = linear_smoothed_cross_entropy_sum(hidden, weight, bias, target, 0.1, 0)
    auto_grads = torch.autograd.grad(autocast, (hidden, weight, bias))
    fused_grads = torch.autograd.grad(fused, (hidden, weight, bias))
    assert fused.dtype == torch.float32
    autocast_error = abs(autocast.item() - reference.item())
    assert abs(fused.item() - reference.item()) <= 2 * autocast_error + 1e-3
    for f, a, r in zip(fused_grads, auto_grads, ref_grads, strict=True):
        assert f.dtype == r.dtype
        assert (f - r).norm() <= 2 * (a - r).norm() + 1e-6


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_training_loss_fuses_output_layer(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's loss takes the fused path for both architectures, with the same loss
    and gradients as the output layer followed by the loss."""
    from heedful.nn.architectures import build_model
    from heedful.presets import bench_config
    from heedful.training import step

    torch.manual_seed(0)
    cfg = bench_config(arch).model.model_copy(update={"dropout": 0.0})
    model = build_model(cfg, 40, 40)
    src = torch.randint(4, 40, (3, 7))
    src_mask = torch.ones(3, 7, dtype=torch.bool)
    src_mask[2, 5:] = False
    tgt = torch.randint(4, 40, (3, 6))
    tgt[1, 4:] = 0
    batch = type("B", (), {"src": src, "src_mask": src_mask, "tgt_in": tgt,
                           "tgt_out": tgt.roll(-1, 1)})()
    calls = []
    real = step.linear_smoothed_cross_entropy_sum
    monkeypatch.setattr(step, "linear_smoothed_cross_entropy_sum",
                        lambda *a: calls.append(1) or real(*a))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(step, "_fuses_output_layer", lambda m, f=fused: f)
        model.zero_grad()
        loss = step.loss_sum(model, batch, 0.1)  # type: ignore[arg-type]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert calls == [1]
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-4)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
