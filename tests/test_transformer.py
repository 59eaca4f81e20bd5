"""Transformer specifics: the fused self-attention equals the explicit formula; config rules."""

from __future__ import annotations

import math

import pytest
import torch

from heedful.config import ConfigError, load_config
from heedful.transformer import SelfAttention


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


class _NoSharing:
    """A Transformer whose states hide ``repeat_rows``: beam search gathers every row."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> object:
        return self.model.encode(src, src_mask)

    def init_state(self, enc: object) -> object:
        return _Hidden(self.model.init_state(enc))

    def step(self, prev: torch.Tensor, state: _Hidden, need_weights: bool = False
             ) -> tuple[torch.Tensor, _Hidden, torch.Tensor | None]:
        logp, inner, attn = self.model.step(prev, state.inner, need_weights)
        return logp, _Hidden(inner), attn


class _Hidden:
    def __init__(self, inner: object) -> None:
        self.inner = inner

    def select(self, index: torch.Tensor) -> _Hidden:
        return _Hidden(self.inner.select(index))  # type: ignore[attr-defined]


def _small_transformer() -> torch.nn.Module:
    from heedful.model import build_model

    cfg = load_config(None, ["model.arch=transformer", "model.attention=multihead",
                             "model.attention_heads=2", "model.input_feeding=false",
                             "model.hidden_dim=16", "model.embed_dim=16", "model.ff_dim=32",
                             "model.encoder_layers=2", "model.decoder_layers=2"]).model
    torch.manual_seed(3)
    model = build_model(cfg, 30, 30).eval()
    with torch.no_grad():  # a peaked output layer: beams diverge and end at different steps
        model.output.weight.mul_(8.0)
    return model


@pytest.mark.parametrize("need_weights", [False, True])
def test_shared_sentence_tensors_in_beam_search_change_nothing(need_weights: bool) -> None:
    """Beam rows share their sentence's memory and cross-attention keys/values (group = k);
    the hypotheses, scores and attention equal those of one gathered copy per row."""
    from heedful.decoding import beam_search

    model = _small_transformer()
    torch.manual_seed(4)
    src = torch.randint(4, 30, (5, 9))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[1, 6:] = False
    src_mask[3, 4:] = False
    max_len = torch.tensor([12, 7, 12, 5, 9])
    shared = beam_search(model, src, src_mask, max_len, 4, n_best=2,  # type: ignore[arg-type]
                         return_attention=need_weights)
    gathered = beam_search(_NoSharing(model), src, src_mask, max_len, 4, n_best=2,  # type: ignore[arg-type]
                           return_attention=need_weights)
    for a_sent, b_sent in zip(shared, gathered, strict=True):
        for a, b in zip(a_sent, b_sent, strict=True):
            assert a.tokens == b.tokens
            assert a.score == pytest.approx(b.score, abs=1e-4)
            if need_weights:
                assert a.attention is not None and b.attention is not None
                torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-5)


def test_grouped_state_select_with_any_index_falls_back_to_rows() -> None:
    """An index that splits a sentence's rows (not a beam reorder) still selects exactly."""
    model = _small_transformer()
    src = torch.randint(4, 30, (3, 6))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    state = model.init_state(model.encode(src, src_mask))
    grouped = state.repeat_rows(3, 2)  # 6 rows, 2 per sentence
    plain = state.select(torch.arange(3).repeat_interleave(2))
    prev = torch.randint(4, 30, (6,))
    _, grouped, _ = model.step(prev, grouped)
    _, plain, _ = model.step(prev, plain)
    assert grouped.group == 2 and plain.group == 1
    index = torch.tensor([5, 0, 3, 3])  # rows of three different sentences, one twice
    a, _, _ = model.step(prev[index], grouped.select(index))
    b, _, _ = model.step(prev[index], plain.select(index))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    reorder = torch.tensor([1, 1, 4, 5])  # two sentences, a beam reorder: stays grouped
    kept = grouped.select(reorder)
    assert kept.group == 2 and kept.memory.size(0) == 2
    a, _, _ = model.step(prev[reorder], kept)
    b, _, _ = model.step(prev[reorder], plain.select(reorder))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, grad, is_causal", [
    (torch.float32, False, False),  # a decoding step: explicit for few queries
    (torch.bfloat16, True, False),  # bf16 training: explicit
    (torch.bfloat16, True, True),
    (torch.float32, True, True),  # fp32 training: the fused kernel
])
def test_attention_kernel_choice_gives_the_same_result(dtype: torch.dtype, grad: bool,
                                                       is_causal: bool) -> None:
    from heedful.attention import fused_or_small_attention

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
