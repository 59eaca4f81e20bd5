"""Transformer specifics: the fused self-attention equals the explicit formula; config rules."""

from __future__ import annotations

import math

import pytest
import torch

from heedful.config import ConfigError, load_config
from heedful.nn.transformer import SelfAttention


@pytest.mark.parametrize("causal", [True, False])
def test_fused_self_attention_equals_explicit_formula(causal: bool) -> None:
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    key_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    fused, _ = attn(x, None if causal else key_mask, causal=causal)
    b, t, d = x.shape
    q, k, v = attn.qkv(x).view(b, t, 3, 4, 4).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    mask = torch.ones(t, t, dtype=torch.bool).tril() if causal else key_mask[:, None, None, :]
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    explicit = attn.out((weights @ v).transpose(1, 2).reshape(b, t, d))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_cached_steps_equal_full_causal_pass() -> None:
    torch.manual_seed(1)
    attn = SelfAttention(16, 2, dropout=0.0).eval()
    x = torch.randn(3, 6, 16)
    full, _ = attn(x, None, causal=True)
    cache = None
    for t in range(6):
        out, cache = attn(x[:, t : t + 1], None, causal=True, cache=cache)
        torch.testing.assert_close(out, full[:, t : t + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["model.arch=transformer"], "needs model.attention: multihead"),
    (["model.arch=transformer", "model.attention=multihead", "model.attention_heads=4",
      "model.input_feeding=false", "model.hidden_dim=256"], "model.ff_dim is required"),
    (["model.ff_dim=1024"], "model.ff_dim applies only to model.arch: transformer"),
])
def test_transformer_config_rules(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("dtype, grad, is_causal", [
    (torch.float32, False, False),  # a decoding step: explicit for few queries
    (torch.bfloat16, True, False),  # bf16 training: explicit
    (torch.bfloat16, True, True),
    (torch.float32, True, True),  # fp32 training: the fused kernel
])
def test_attention_kernel_choice_gives_the_same_result(dtype: torch.dtype, grad: bool,
                                                       is_causal: bool) -> None:
    from heedful.nn.attention import fused_or_small_attention

    torch.manual_seed(5)
    q, k, v = (torch.randn(3, 2, 6, 8) for _ in range(3))
    mask = None if is_causal else torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4],
                                               dtype=torch.bool)[:, None, None, :]
    expect = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                              is_causal=is_causal)
    with torch.set_grad_enabled(grad):
        got = fused_or_small_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, is_causal)
    assert got.dtype == dtype
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.float(), expect, atol=tol, rtol=tol)
