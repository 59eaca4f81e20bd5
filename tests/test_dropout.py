"""The cheap CPU dropout (heedful.runtime.dropout): F.dropout's distribution, gradient and API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from heedful.nn.attention import explicit_attention
from heedful.runtime.dropout import Dropout, dropout, keep_mask, keep_scale


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_keep_fraction_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout(x, p)
    kept = y != 0
    # 10^6 Bernoulli draws: the kept share is within 5 standard deviations of 1 - p
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / 1e6) ** 0.5
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))


def test_elements_are_independent() -> None:
    # neighbours inside one int64 word (four 16-bit draws) must not be correlated
    torch.manual_seed(1)
    keep = keep_mask((400_000, 4), 0.5, torch.device("cpu")).float()
    corr = torch.corrcoef(keep.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 0.01


def test_gradient_is_mask_times_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    assert x.grad is not None
    expected = (y != 0).float() / 0.7
    assert torch.allclose(x.grad, expected)


def test_seeded_and_eval_mode() -> None:
    x = torch.randn(50, 50)
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    assert torch.equal(a, b)
    module = Dropout(0.1).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), F.dropout(x, 1.0))  # all dropped, no 1/0 scale
    assert Dropout(0.25).state_dict() == {} and Dropout(0.25).p == 0.25


def test_attention_with_dropout_is_sdpa_math_with_our_mask() -> None:
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    p = 0.2
    torch.manual_seed(5)
    keep = keep_mask((2, 4, 7, 7), p, torch.device("cpu"))
    weights = torch.softmax((q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~mask, -torch.inf), -1)
    expected = (weights * keep / (1 - p)) @ v
    torch.manual_seed(5)
    assert torch.allclose(explicit_attention(q, k, v, mask, False, p), expected, atol=1e-6)
    # causal: position i sees keys <= i only
    torch.manual_seed(5)
    causal = explicit_attention(q, k, v, None, True, p)
    tril = torch.ones(7, 7, dtype=torch.bool).tril()
    weights = torch.softmax((q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~tril, -torch.inf), -1)
    assert torch.allclose(causal, (weights * keep / (1 - p)) @ v, atol=1e-6)


def test_float32_scaled_mask_equals_bool_mask_path() -> None:
    """float32 takes the scaled-mask product: the same draws and, bit for bit, the same values
    as the bool mask times the scale (so seeded runs and resumes are unchanged); bf16 keeps the
    bool mask and drops the same elements."""
    x = torch.randn(37, 129)
    torch.manual_seed(5)
    got = dropout(x, 0.2)
    torch.manual_seed(5)
    expected = (x * keep_mask(x.shape, 0.2, x.device)).mul_(1.0 / 0.8)
    assert torch.equal(got, expected)
    torch.manual_seed(5)
    scaled = keep_scale(x.shape, 0.2, x.device)
    assert scaled.dtype == torch.float32 and set(scaled.unique().tolist()) == {0.0, 1 / 0.8}
    torch.manual_seed(5)
    low = dropout(x.bfloat16(), 0.2)
    assert low.dtype == torch.bfloat16 and torch.equal(low != 0, got != 0)
