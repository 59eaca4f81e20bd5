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
* ``local``:      Luong's local-p: a predicted centre p_t = S * sigmoid(v_p . tanh(W_p q)), the
                  general score softmaxed over the window [p_t - D, p_t + D], then rescaled by
                  the Gaussian exp(-(s - p_t)^2 / (2 (D/2)^2)) — so, as in the paper, its
                  weights need not sum to 1 (S = the source's last position)
* ``coverage``:   additive score plus w_c * c_i, where the coverage vector c is the sum of all
                  earlier attention distributions (See et al. 2017, eq. 11); carried in the
                  decoder state; :func:`coverage_loss` is the paper's sum_i min(a_i, c_i)

In heedful's RNN decoder the query is the *current* top-layer decoder state h_t (Luong's
placement, also used by OpenNMT-py's ``mlp`` and Joey NMT's ``bahdanau``), not Bahdanau's
previous state s_{t-1}: one decoder then serves every variant, and without input feeding
the whole target side is attended in one batched call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heedful.runtime.dropout import dropout as drop_elements
from heedful.runtime.gemm import Linear

AttentionState = dict[str, Tensor]
"""Per-source tensors a variant carries across decoding steps (batch-first)."""


def masked_softmax(scores: Tensor, key_mask: Tensor) -> Tensor:
    """Softmax over the last axis of scores (B, H, Tq, Tk), exactly 0 where key_mask (B, Tk)
    is False."""
    mask = key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


# When attention on the CPU runs as two batched matrix products instead of the fused flash
# kernel (measured at 2 threads and 1, see docs/profile_*):
# * inference with at most SMALL_QUERY queries per row (decoding steps; a sentence's k beams):
#   the flash kernel's per-block set-up costs 1.3-3x the explicit formula;
# * bf16 (autocast) with at most SMALL_SCORES query-key pairs: PyTorch's bf16 flash kernel on
#   the CPU is 2-4x slower than bf16 matrix products with a float32 softmax (fwd+bwd at lengths
#   32-256, ~4k tokens per batch).
# Everything else (fp32 training, long inputs) keeps the fused kernels: memory linear in length.
SMALL_QUERY = 16
SMALL_SCORES = 256 * 256


def fused_or_small_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                             is_causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(Dh) + mask) v for q (B, H, Tq, Dh), k and v (B, H, Tk, Dh), mask
    broadcastable to (B, H, Tq, Tk), True = attend (or ``is_causal``); -> (B, H, Tq, Dh).

    The explicit formula where it is faster on the CPU (see above), else
    ``scaled_dot_product_attention``."""
    tq, tk = q.size(-2), k.size(-2)
    explicit = q.device.type == "cpu" and (
        (tq <= SMALL_QUERY and not torch.is_grad_enabled())
        or (q.dtype != torch.float32 and tq * tk <= SMALL_SCORES))
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    return explicit_attention(q, k, v, mask, is_causal)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                       is_causal: bool = False, dropout: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(Dh) + mask) v as two batched matrix products, shapes as
    :func:`fused_or_small_attention`; the softmax in float32 (under bf16 too).

    With ``dropout`` > 0 it is what SDPA's math kernel does (its only CPU path then), with the
    cheap dropout mask of :mod:`heedful.runtime.dropout` instead of ``bernoulli_``."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.size(-1) ** -0.5)  # (B, H, Tq, Tk)
    if is_causal:
        mask = torch.ones(*scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1, dtype=torch.float32).to(v.dtype)
    if dropout > 0.0:
        weights = drop_elements(weights, dropout)
    return torch.matmul(weights, v)


class Attention(nn.Module):
    """Base class: subclasses define :meth:`score` (and :meth:`precompute` if they need it)."""

    num_heads: int = 1
    # True when the state changes with every query (coverage): rows cannot share it
    state_per_query: bool = False

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
        self.key_proj = Linear(key_dim, query_dim, bias=False)

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys)}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        return torch.matmul(query, state["keys_proj"].transpose(1, 2)).unsqueeze(1)


class AdditiveAttention(Attention):
    """Bahdanau's MLP score v^T tanh(W_q q + W_k k); W_k k is computed once per source."""

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.query_proj = Linear(query_dim, attention_dim, bias=False)
        self.key_proj = Linear(key_dim, attention_dim, bias=True)
        self.energy = Linear(attention_dim, 1, bias=False)

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys)}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (B, Tq, 1, A)
        k = state["keys_proj"].unsqueeze(1)  # (B, 1, Tk, A)
        # tanh in place on the sum: one (B, Tq, Tk, A) buffer, not two (autograd-safe: the
        # sum is not needed backward, tanh's own output is)
        return self.energy((q + k).tanh_()).squeeze(-1).unsqueeze(1)  # (B, 1, Tq, Tk)


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
        self.query_proj = Linear(query_dim, query_dim, bias=False)
        self.key_proj = Linear(key_dim, query_dim, bias=False)
        self.value_proj = Linear(key_dim, query_dim, bias=False)
        self.out_proj = Linear(query_dim, query_dim, bias=False)

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
            heads = fused_or_small_attention(
                self._split(self.query_proj(query)), state["keys_proj"], state["values_proj"],
                key_mask[:, None, None, :])
        context = self.out_proj(heads.transpose(1, 2).reshape(b, tq, -1))
        return context, weights, state


class LocalAttention(Attention):
    """Luong et al. 2015 local-p attention with the general score (their best local model)."""

    def __init__(self, query_dim: int, key_dim: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.key_proj = Linear(key_dim, query_dim, bias=False)
        self.position_proj = Linear(query_dim, query_dim, bias=False)  # W_p
        self.position_energy = Linear(query_dim, 1, bias=False)  # v_p

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys)}

    def score(self, query: Tensor, keys: Tensor, state: AttentionState) -> Tensor:
        return torch.matmul(query, state["keys_proj"].transpose(1, 2)).unsqueeze(1)

    def centre(self, query: Tensor, key_mask: Tensor) -> Tensor:
        """p_t (B, Tq) in [0, S] where S is each source's last real position."""
        # float32 whatever the query's dtype: bf16 holds integers exactly only up to 256, so
        # under bf16 autocast positions past 256 (and the window around p_t) would be rounded
        last = (key_mask.sum(1) - 1).float()  # (B,)
        gate = torch.sigmoid(self.position_energy(torch.tanh(self.position_proj(query))))
        return last[:, None] * gate.squeeze(-1).float()

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
        centre = self.centre(query, key_mask)  # (B, Tq)
        positions = torch.arange(keys.size(1), device=keys.device, dtype=torch.float32)
        distance = positions[None, None, :] - centre[:, :, None]  # (B, Tq, Tk)
        in_window = distance.abs() <= self.window
        mask = key_mask[:, None, :] & in_window  # (B, Tq, Tk)
        scores = self.score(query, keys, state).masked_fill(~mask[:, None], float("-inf"))
        sigma = self.window / 2
        gaussian = torch.exp(-(distance**2) / (2 * sigma**2))
        weights = torch.softmax(scores, dim=-1) * gaussian[:, None]  # (B, 1, Tq, Tk)
        context = torch.matmul(weights.squeeze(1).to(values.dtype), values)
        return context, weights, state


class CoverageAttention(Attention):
    """Additive attention with a coverage vector (See et al. 2017, eq. 11).

    The coverage c (B, Tk) = the sum of all earlier attention distributions lives in the
    state under "coverage"; with several queries at once they are processed in order.
    """

    state_per_query = True

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.query_proj = Linear(query_dim, attention_dim, bias=False)
        self.key_proj = Linear(key_dim, attention_dim, bias=True)
        self.coverage_proj = Linear(1, attention_dim, bias=False)  # w_c
        self.energy = Linear(attention_dim, 1, bias=False)

    def precompute(self, keys: Tensor) -> AttentionState:
        return {"keys_proj": self.key_proj(keys),
                "coverage": keys.new_zeros(keys.shape[:2])}

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
        keys_proj, coverage = state["keys_proj"], state["coverage"]
        queries = self.query_proj(query)  # (B, Tq, A)
        all_weights = []
        for t in range(query.size(1)):  # coverage makes each step depend on the earlier ones
            energy = torch.tanh(queries[:, t : t + 1] + keys_proj
                                + self.coverage_proj(coverage.unsqueeze(-1)))  # (B, Tk, A)
            scores = self.energy(energy).squeeze(-1)[:, None, None, :]  # (B, 1, 1, Tk)
            weights = masked_softmax(scores, key_mask)
            coverage = coverage + weights[:, 0, 0]
            all_weights.append(weights)
        stacked = torch.cat(all_weights, 2)  # (B, 1, Tq, Tk)
        context = torch.matmul(stacked.squeeze(1), values)
        return context, stacked, {"keys_proj": keys_proj, "coverage": coverage}


def coverage_loss(weights: Tensor, tgt_mask: Tensor) -> Tensor:
    """See et al. 2017, eq. 12, summed over real target steps: sum_t sum_i min(a_t,i, c_t,i)
    with c_t = sum of the distributions before step t. weights (B, T, S); tgt_mask (B, T)."""
    coverage = weights.cumsum(1) - weights
    return (torch.minimum(weights, coverage).sum(-1) * tgt_mask).sum()


def guided_alignment_loss(weights: Tensor, links: Tensor) -> Tensor:
    """Guided alignment (Garg et al. 2019), summed over the target steps that have links:
    sum_t KL(p_t || a_t), where p_t spreads 1 evenly over the source positions linked to
    target position t and a_t is the attention of step t. Zero where the attention equals
    that target, positive otherwise; its gradient is that of the cross-entropy
    -sum p_t log a_t (OpenNMT-py's and fairseq's alignment loss), which differs from it by
    the targets' entropy only.

    weights (B, T, S); links (K, 3) int64 rows (batch row, target position, source
    position), duplicates allowed."""
    if links.numel() == 0:
        return weights.sum() * 0.0
    target = torch.zeros(weights.shape, dtype=torch.float32, device=weights.device)
    target[links[:, 0], links[:, 1], links[:, 2]] = 1.0
    per_step = target.sum(-1)
    linked = per_step > 0
    p = target[linked] / per_step[linked].unsqueeze(-1)  # (N, S)
    a = weights.float()[linked]
    return (torch.xlogy(p, p) - p * a.clamp_min(1e-9).log()).sum()


@dataclass(frozen=True)
class AttentionOptions:
    """What a variant's constructor may use: the query and key sizes, and its config options."""

    query_dim: int
    key_dim: int
    num_heads: int = 1
    local_window: int | None = None


@dataclass(frozen=True)
class AttentionVariant:
    """A registry entry: how to build the variant, and the ``model.*`` config options it
    takes, each with an example value (the parametrized tests and experiments use these).

    An option listed here whose config default is ``None`` is required for this variant;
    every option is refused for the variants that do not list it (see
    :class:`heedful.nn.model_config.ModelConfig`)."""

    build: Callable[[AttentionOptions], Attention]
    options: dict[str, Any] = field(default_factory=dict)
    needs_equal_dims: bool = False
    """The score is a plain dot product: query and key sizes must be equal."""


def build_attention(kind: str, query_dim: int, key_dim: int, num_heads: int = 1,
                    local_window: int | None = None) -> Attention:
    """The one place that maps ``model.attention`` (and its options) to a module."""
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
    variant = ATTENTIONS[kind]
    if variant.needs_equal_dims and query_dim != key_dim:
        raise ValueError(f"{kind} attention needs query_dim == key_dim ({query_dim} != {key_dim})")
    if "local_window" in variant.options and local_window is None:
        raise ValueError("local attention needs a window half-width D (model.local_window)")
    return variant.build(AttentionOptions(query_dim, key_dim, num_heads, local_window))


NO_ATTENTION = "none"
"""``model.attention: none``: the no-attention baseline (the decoder sees only the final
encoder state); not a module, so not in the registry."""

ATTENTIONS: dict[str, AttentionVariant] = {
    "dot": AttentionVariant(lambda o: DotAttention(), needs_equal_dims=True),
    "scaled_dot": AttentionVariant(lambda o: ScaledDotAttention(), needs_equal_dims=True),
    "general": AttentionVariant(lambda o: GeneralAttention(o.query_dim, o.key_dim)),
    "additive": AttentionVariant(
        lambda o: AdditiveAttention(o.query_dim, o.key_dim, o.query_dim)),
    "multihead": AttentionVariant(
        lambda o: MultiHeadAttention(o.query_dim, o.key_dim, o.num_heads),
        options={"attention_heads": 4}),
    "local": AttentionVariant(
        lambda o: LocalAttention(o.query_dim, o.key_dim, o.local_window or 0),
        options={"local_window": 2}),
    "coverage": AttentionVariant(
        lambda o: CoverageAttention(o.query_dim, o.key_dim, o.query_dim),
        options={"coverage_loss_weight": 1.0, "coverage_loss_from_step": 0}),
}
"""Registered variants: adding one = a class, an entry here (with its options), a test row."""


def attention_kinds() -> tuple[str, ...]:
    """Every allowed value of ``model.attention``."""
    return (NO_ATTENTION, *ATTENTIONS)


def variant_options(kind: str) -> dict[str, Any]:
    """The config options (with example values) that attention ``kind`` takes."""
    return dict(ATTENTIONS[kind].options) if kind in ATTENTIONS else {}


def all_variant_options() -> dict[str, tuple[str, ...]]:
    """Each variant-specific config option -> the variants that take it."""
    owners: dict[str, list[str]] = {}
    for kind, variant in ATTENTIONS.items():
        for key in variant.options:
            owners.setdefault(key, []).append(kind)
    return {key: tuple(kinds) for key, kinds in owners.items()}
