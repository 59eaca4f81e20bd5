"""Every attention variant behind one contract.

Attention(Q, K, V) = softmax(score(Q, K)) V, with padded keys masked out (weight exactly 0).

The contract (shared by every variant, relied on by the decoders):

* ``precompute(keys (B, Tk, Dk)) -> AttentionState``: what a variant derives once per source
  (a key projection; nothing for plain dot products). It is kept in the *decoder state*, so
  beam search reorders it like everything else; modules hold no per-sentence state.
* ``forward(query (B, Tq, Dq), keys (B, Tk, Dk), values (B, Tk, Dv), key_mask (B, Tk) bool,
  state, need_weights=True) -> (context (B, Tq, Dv), weights (B, H, Tq, Tk) | None, state)``;
  H = 1 for single-head variants. ``key_mask`` is True for real tokens.

Scores (Luong et al. 2015, eq. 8; Bahdanau et al. 2015, eq. 6; Vaswani et al. 2017, eq. 1):

* ``dot``:        q . k
* ``scaled_dot``: q . k / sqrt(d_k)                     (the default)
* ``general``:    q . (W k)
* ``additive``:   v . tanh(W_q q + W_k k)
* ``multihead``:  scaled dot over H heads of projected q, k, v; heads concatenated, projected

In heedful's RNN decoder the query is the *current* top-layer decoder state h_t (Luong's
placement, also used by OpenNMT-py's ``mlp`` and Joey NMT's ``bahdanau``), not Bahdanau's
previous state s_{t-1}: one decoder then serves every variant, and without input feeding
the whole target side is attended in one batched call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionState = dict[str, Tensor]
"""Per-source tensors a variant carries across decoding steps (batch-first)."""


def masked_softmax(scores: Tensor, key_mask: Tensor) -> Tensor:
    """Softmax over the last axis of scores (B, H, Tq, Tk), exactly 0 where key_mask (B, Tk)
    is False."""
    mask = key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class Attention(nn.Module):
    """Base class: subclasses define :meth:`score` (and :meth:`precompute` if they need it)."""

    num_heads: int = 1

    def precompute(self, keys: Tensor) -> AttentionState:
        return {}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        """(B, Tq, Dq), (B, Tk, Dk) -> scores (B, H, Tq, Tk)."""
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        key_mask: Tensor,
        state: AttentionState | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None, AttentionState]:
        if state is None:
            state = self.precompute(keys)
        weights = masked_softmax(self.score(query, keys, state), key_mask)  # (B, 1, Tq, Tk)
        context = torch.matmul(weights.squeeze(1), values)  # (B, Tq, Dv)
        return context, weights, state


class DotAttention(Attention):
    """Luong's dot score q . k (needs Dq == Dk)."""

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        return torch.matmul(query, keys.transpose(1, 2)).unsqueeze(1)


class ScaledDotAttention(Attention):
    """softmax(Q K^T / sqrt(d_k)) V. Without weights it runs PyTorch's fused kernel."""

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        scale = 1.0 / math.sqrt(keys.size(-1))
        return torch.matmul(query, keys.transpose(1, 2)).unsqueeze(1) * scale

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        key_mask: Tensor,
        state: AttentionState | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None, AttentionState]:
        if need_weights:
            return super().forward(query, keys, values, key_mask, state, need_weights)
        context = F.scaled_dot_product_attention(
            query.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1),
            attn_mask=key_mask[:, None, None, :],
        ).squeeze(1)
        return context, None, state if state is not None else {}


class GeneralAttention(Attention):
    """Luong's bilinear score q^T W k; W k is computed once per source."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys)}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        return torch.matmul(query, state["keys_proj"].transpose(1, 2)).unsqueeze(1)


class AdditiveAttention(Attention):
    """Bahdanau's MLP score v^T tanh(W_q q + W_k k); W_k k is computed once per source."""

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, attention_dim, bias=True)
        self.energy = nn.Linear(attention_dim, 1, bias=False)

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys)}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (B, Tq, 1, A)
        k = state["keys_proj"].unsqueeze(1)  # (B, 1, Tk, A)
        return self.energy(torch.tanh(q + k)).squeeze(-1).unsqueeze(1)  # (B, 1, Tq, Tk)


class MultiHeadAttention(Attention):
    """Scaled dot-product attention over ``num_heads`` heads (Vaswani et al. 2017, eq. 4-5).

    Returns per-head weights (B, H, Tq, Tk); the key and value projections are computed once
    per source. Without weights it runs PyTorch's fused kernel.
    """

    def __init__(self, query_dim: int, key_dim: int, num_heads: int) -> None:
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"query_dim {query_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        self.query_proj = nn.Linear(query_dim, query_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
        self.value_proj = nn.Linear(key_dim, query_dim, bias=False)
        self.out_proj = nn.Linear(query_dim, query_dim, bias=False)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def precompute(self, keys: Tensor) -> AttentionState:
        # keys double as values in every heedful model (the encoder states)
        return {"keys_proj": self._split(self.key_proj(keys)),
                "values_proj": self._split(self.value_proj(keys))}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        q = self._split(self.query_proj(query))
        return torch.matmul(q, state["keys_proj"].transpose(2, 3)) / math.sqrt(self.head_dim)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        key_mask: Tensor,
        state: AttentionState | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None, AttentionState]:
        if state is None:
            state = {"keys_proj": self._split(self.key_proj(keys)),
                     "values_proj": self._split(self.value_proj(values))}
        b, tq, _ = query.shape
        weights: Tensor | None
        if need_weights:
            weights = masked_softmax(self.score(query, keys, state), key_mask)
            heads = torch.matmul(weights, state["values_proj"])  # (B, H, Tq, Dh)
        else:
            weights = None
            heads = F.scaled_dot_product_attention(
                self._split(self.query_proj(query)), state["keys_proj"], state["values_proj"],
                attn_mask=key_mask[:, None, None, :])
        context = self.out_proj(heads.transpose(1, 2).reshape(b, tq, -1))
        return context, weights, state


def build_attention(kind: str, query_dim: int, key_dim: int, num_heads: int = 1) -> Attention:
    """The one place that maps ``model.attention`` to a module."""
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
    if kind in ("dot", "scaled_dot") and query_dim != key_dim:
        raise ValueError(f"{kind} attention needs query_dim == key_dim ({query_dim} != {key_dim})")
    return ATTENTIONS[kind](query_dim, key_dim, num_heads)


ATTENTIONS = {
    "dot": lambda q, k, h: DotAttention(),
    "scaled_dot": lambda q, k, h: ScaledDotAttention(),
    "general": lambda q, k, h: GeneralAttention(q, k),
    "additive": lambda q, k, h: AdditiveAttention(q, k, q),
    "multihead": lambda q, k, h: MultiHeadAttention(q, k, h),
}
"""Registered variants: adding one = a class, an entry here, a config value, a test row."""
