"""Every registered attention variant honours the one contract."""

from __future__ import annotations

import math

import pytest
import torch

from heedful.nn.attention import (
    ATTENTIONS,
    LocalAttention,
    build_attention,
    coverage_loss,
    masked_softmax,
    variant_options,
)

DIM = 16
VARIANTS = sorted(ATTENTIONS)


def make_inputs(b: int = 3, tq: int = 4, tk: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, tq, DIM, generator=gen)
    k = torch.randn(b, tk, DIM, generator=gen)
    lengths = torch.tensor([tk, tk - 2, 1][:b])
    mask = torch.arange(tk)[None, :] < lengths[:, None]
    return q, k, mask


def attention(kind: str):
    torch.manual_seed(0)
    options = variant_options(kind)  # the registry's example values
    return build_attention(kind, DIM, DIM, options.get("attention_heads", 1),
                           local_window=options.get("local_window")).eval()


@pytest.mark.parametrize("kind", VARIANTS)
def test_shapes(kind: str) -> None:
    attn = attention(kind)
    q, k, mask = make_inputs()
    ctx, w, state = attn(q, k, k, mask, attn.precompute(k))
    assert ctx.shape == (3, 4, DIM)
    assert w is not None and w.shape == (3, attn.num_heads, 4, 6)
    assert isinstance(state, dict)


@pytest.mark.parametrize("kind", VARIANTS)
def test_weights_sum_to_one_and_zero_on_padding(kind: str) -> None:
    attn = attention(kind)
    q, k, mask = make_inputs()
    _, w, _ = attn(q, k, k, mask)
    assert w is not None
    if kind == "local":  # the Gaussian rescales the softmax: at most 1 (own test below)
        assert torch.all(w.sum(-1) <= 1 + 1e-6) and torch.all(w >= 0)
    else:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-6, rtol=0)
    padded = ~mask[:, None, None, :].expand_as(w)
    assert torch.all(w[padded] == 0.0)  # exactly 0, not just small


@pytest.mark.parametrize("kind", VARIANTS)
def test_padded_batch_equals_items_alone(kind: str) -> None:
    attn = attention(kind)
    q, k, mask = make_inputs()
    ctx, w, _ = attn(q, k, k, mask)
    assert w is not None
    for i in range(q.size(0)):
        n = int(mask[i].sum())
        ctx_i, w_i, _ = attn(q[i : i + 1], k[i : i + 1, :n], k[i : i + 1, :n], mask[i : i + 1, :n])
        assert w_i is not None
        torch.testing.assert_close(ctx[i : i + 1], ctx_i, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w[i : i + 1, :, :, :n], w_i, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", VARIANTS)
def test_gradients_reach_every_parameter(kind: str) -> None:
    attn = attention(kind).train()
    q, k, mask = make_inputs()
    q.requires_grad_(True)
    k.requires_grad_(True)
    ctx, _, _ = attn(q, k, k, mask)
    ctx.pow(2).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is not None and k.grad.abs().sum() > 0
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", VARIANTS)
def test_fused_path_equals_explicit_formula(kind: str) -> None:
    attn = attention(kind)
    q, k, mask = make_inputs()
    ctx_explicit, _, _ = attn(q, k, k, mask, need_weights=True)
    ctx_fused, _w, _ = attn(q, k, k, mask, need_weights=False)
    torch.testing.assert_close(ctx_fused, ctx_explicit, atol=1e-5, rtol=1e-5)


def test_scaled_dot_equals_hand_computation() -> None:
    """softmax(Q K^T / sqrt(d_k)) V, computed by hand with plain Python floats."""
    q = torch.tensor([[[1.0, 0.0], [0.5, -1.0]]])  # (1, 2, 2)
    k = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]]])  # (1, 3, 2)
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[True, True, False]])
    ctx, w, _ = build_attention("scaled_dot", 2, 2)(q, k, v, mask)
    assert w is not None
    for i, qi in enumerate(q[0].tolist()):
        scores = [sum(a * b for a, b in zip(qi, kj, strict=True)) / math.sqrt(2)
                  for kj in k[0].tolist()[:2]]
        exps = [math.exp(s) for s in scores]
        weights = [e / sum(exps) for e in exps] + [0.0]
        expected_ctx = [sum(weights[j] * v[0, j, d].item() for j in range(3)) for d in range(2)]
        assert w[0, 0, i].tolist() == pytest.approx(weights, abs=1e-6)
        assert ctx[0, i].tolist() == pytest.approx(expected_ctx, abs=1e-6)


def test_masked_softmax_exact_zero() -> None:
    scores = torch.tensor([[[[100.0, 1.0, 50.0]]]])
    w = masked_softmax(scores, torch.tensor([[False, True, True]]))
    assert w[0, 0, 0, 0].item() == 0.0


def test_unknown_variant_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown attention 'luong'; choose one of"):
        build_attention("luong", DIM, DIM)


def test_local_p_equals_hand_computation() -> None:
    torch.manual_seed(2)
    attn = LocalAttention(4, 4, window=1).eval()
    q = torch.randn(1, 1, 4)
    k = torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, True, True, False]])  # last real position S = 3
    _, w, _ = attn(q, k, k, mask)
    assert w is not None
    with torch.no_grad():
        gate = torch.sigmoid(attn.position_energy(torch.tanh(attn.position_proj(q)))).item()
        p = 3 * gate
        scores = [float(q[0, 0] @ attn.key_proj(k[0, j])) for j in range(5)]
    window = [j for j in range(4) if abs(j - p) <= 1]
    z = sum(math.exp(scores[j]) for j in window)
    sigma = 0.5
    expected = [math.exp(scores[j]) / z * math.exp(-((j - p) ** 2) / (2 * sigma**2))
                if j in window else 0.0 for j in range(5)]
    assert w[0, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_coverage_accumulates_in_state_and_steps_equal_all_at_once() -> None:
    attn = attention("coverage")
    q, k, mask = make_inputs()
    _, w_all, state_all = attn(q, k, k, mask)
    state = attn.precompute(k)
    for t in range(q.size(1)):
        _, w_t, state = attn(q[:, t : t + 1], k, k, mask, state)
        assert w_all is not None and w_t is not None
        torch.testing.assert_close(w_t, w_all[:, :, t : t + 1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state["coverage"], w_all.sum((1, 2)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state_all["coverage"], state["coverage"])


def test_coverage_loss_zero_without_overlap_and_hand_value() -> None:
    disjoint = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert coverage_loss(disjoint, torch.ones(1, 3)).item() == 0.0
    overlap = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])
    # step 2: min(0.5, 0.5) + min(0.5, 0.5) = 1.0; step 1 has no coverage yet
    assert coverage_loss(overlap, torch.ones(1, 2)).item() == pytest.approx(1.0)
    assert coverage_loss(overlap, torch.tensor([[1.0, 0.0]])).item() == 0.0
