"""The Transformer encoder-decoder (Vaswani et al. 2017), pre-norm by default.

Self-attention runs ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) in
training; cross-attention is the registered ``multihead`` variant of :mod:`heedful.nn.attention`
(the same contract as every RNN variant), whose key/value projections of the encoder output
are computed once per source and kept in the decoder state. Step-by-step decoding keeps a
key/value cache per layer (grown with ``torch.cat`` each step, or on a GPU preallocated: see
:class:`KVCache`); cross-attention weights (per layer and head) are computed only when asked
for, so the path that does not ask stays on the fused kernel.

The model implements the decoding protocol of :mod:`heedful.decoding.search`; its config
(:class:`TransformerConfig`) and builder (:func:`build_transformer`) close the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias, cast

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from heedful.decoding.search import SentenceGroupedState, pick_rows
from heedful.nn.attention import (
    AttentionState,
    MultiHeadAttention,
    explicit_attention,
    fused_or_small_attention,
)
from heedful.nn.model_config import ModelConfig
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.dropout import Dropout
from heedful.runtime.gemm import Linear
from heedful.tokenizer import PAD_ID

KV_CAPACITY = 64
"""Positions a preallocated :class:`KVCache` holds at first; it doubles when full."""


@dataclass
class KVCache:
    """A decoder layer's self-attention keys and values, preallocated: ``keys`` and ``values``
    (B, H, capacity, Dh), of which the first ``length`` positions are filled.

    A step writes its position into the buffers in place (doubling them when full), where the
    ``torch.cat`` cache copies every position so far into a new tensor at every step: greedy
    decoding copies nothing, and a beam reorder copies the buffers once instead of twice.
    A beam reorder (``index_select``) gathers into new buffers, so a state selected from
    another stays valid; a state that has been stepped must not be stepped again (its
    successor shares and fills its buffers), which no search does."""

    keys: Tensor
    values: Tensor
    length: int

    @classmethod
    def of(cls, keys: Tensor, values: Tensor, capacity: int | None = None) -> KVCache:
        """A cache holding ``keys`` and ``values`` (B, H, T, Dh), with room for ``capacity``
        positions (default :data:`KV_CAPACITY`)."""
        b, h, t, d = keys.shape
        size = (b, h, max(capacity or KV_CAPACITY, t), d)
        return cls(keys.new_empty(size), values.new_empty(size), 0).append(keys, values)

    def append(self, keys: Tensor, values: Tensor) -> KVCache:
        """This cache with positions (B, H, T, Dh) added after the filled ones (in place)."""
        start, end = self.length, self.length + keys.size(2)
        k_buf, v_buf = self.keys, self.values
        if end > k_buf.size(2):  # full: double, so regrowing is rare (amortised O(1))
            k_buf, v_buf = (_grown(buf, max(end, 2 * buf.size(2)), start)
                            for buf in (k_buf, v_buf))
        k_buf[:, :, start:end] = keys
        v_buf[:, :, start:end] = values
        return KVCache(k_buf, v_buf, end)

    def filled(self) -> tuple[Tensor, Tensor]:
        """The keys and values of the positions so far, (B, H, length, Dh) views."""
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def index_select(self, rows: Tensor) -> KVCache:
        return KVCache(self.keys.index_select(0, rows), self.values.index_select(0, rows),
                       self.length)

    def repeat_interleave(self, k: int) -> KVCache:
        return KVCache(self.keys.repeat_interleave(k, 0), self.values.repeat_interleave(k, 0),
                       self.length)


def _grown(buf: Tensor, capacity: int, filled: int) -> Tensor:
    """``buf`` (B, H, C, Dh) copied into a buffer of ``capacity`` positions."""
    new = buf.new_empty(buf.size(0), buf.size(1), capacity, buf.size(3))
    new[:, :, :filled] = buf[:, :, :filled]
    return new


Cache: TypeAlias = "tuple[Tensor, Tensor] | KVCache"
"""A layer's self-attention cache: keys and values (B, H, t, Dh) grown by ``torch.cat``, or
preallocated."""


def _select_cache(cache: Cache | None, rows: Tensor) -> Cache | None:
    if cache is None or isinstance(cache, KVCache):
        return None if cache is None else cache.index_select(rows)
    return cache[0].index_select(0, rows), cache[1].index_select(0, rows)


def _repeat_cache(cache: Cache | None, k: int) -> Cache | None:
    if cache is None or isinstance(cache, KVCache):
        return None if cache is None else cache.repeat_interleave(k)
    return cache[0].repeat_interleave(k, 0), cache[1].repeat_interleave(k, 0)


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal with an optional key/value cache (decoder)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = Linear(dim, 3 * dim)
        self.out = Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, key_mask: Tensor | None, causal: bool,
                cache: Cache | None = None) -> tuple[Tensor, Cache]:
        """x (B, T, D) -> (B, T, D) and the cache of keys/values (B, H, T_total, Dh).

        With ``cache`` (step-by-step decoding), x holds the new position(s) only and attends to
        the cached positions plus itself; a :class:`KVCache` is filled in place, a pair of
        tensors is returned grown by ``torch.cat``. Without, the keys/values of x are returned.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        new_cache: Cache
        if isinstance(cache, KVCache):
            new_cache = cache.append(k, v)
            k, v = new_cache.filled()
        else:
            if cache is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            new_cache = (k, v)
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]
        drop = self.dropout if self.training else 0.0
        is_causal = False
        if causal and cache is None and t > 1:
            if mask is None:  # no (T, T) mask tensor: the kernels apply causality themselves
                is_causal = True
            else:
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        if drop > 0.0 and x.device.type == "cpu":
            out = explicit_attention(q, k, v, mask, is_causal, drop)
        elif drop == 0.0:
            out = fused_or_small_attention(q, k, v, mask, is_causal)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop,
                                                 is_causal=is_causal)
        return self.out(out.transpose(1, 2).reshape(b, t, d)), new_cache


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(Linear(dim, ff_dim), nn.ReLU(), Dropout(dropout),
                                 Linear(ff_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, pre_norm: bool,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.self_attn = SelfAttention(
            dim, num_heads, dropout if attention_dropout is None else attention_dropout)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.pre_norm:
            x = x + self.drop(self.self_attn(self.norm1(x), mask, causal=False)[0])
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.self_attn(x, mask, causal=False)[0]))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, pre_norm: bool,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.self_attn = SelfAttention(
            dim, num_heads, dropout if attention_dropout is None else attention_dropout)
        self.cross_attn = MultiHeadAttention(dim, dim, num_heads)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor, cross: AttentionState,
                cache: Cache | None, need_weights: bool, group: int = 1
                ) -> tuple[Tensor, Tensor | None, Cache]:
        """x (N * group, T, D); memory, memory_mask and cross hold N sentences, each shared by
        ``group`` consecutive rows of x (see :class:`TransformerState`)."""
        pre = self.pre_norm
        h = self.norm1(x) if pre else x
        attn, kv = self.self_attn(h, None, causal=True, cache=cache)
        x = x + self.drop(attn)
        x = x if pre else self.norm1(x)
        h = self.norm2(x) if pre else x
        b, t, d = h.shape
        # a sentence's rows become that many queries of the one sentence: (N, group * T, D)
        context, weights, _ = self.cross_attn(h.reshape(b // group, group * t, d), memory,
                                              memory, memory_mask, cross, need_weights)
        context = context.reshape(b, t, d)
        if weights is not None and group > 1:  # (N, H, group * T, S) -> (N * group, H, T, S)
            n, heads, _, s = weights.shape
            weights = weights.view(n, heads, group, t, s).transpose(1, 2).reshape(b, heads, t, s)
        x = x + self.drop(context)
        x = x if pre else self.norm2(x)
        h = self.norm3(x) if pre else x
        x = x + self.drop(self.ff(h))
        x = x if pre else self.norm3(x)
        return x, weights, kv


def sinusoidal_positions(max_len: int, dim: int) -> Tensor:
    pos = torch.arange(max_len).unsqueeze(1).float()
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10_000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table


@dataclass
class TransformerEncoderOutput:
    memory: Tensor  # (B, S, D)
    src_mask: Tensor  # (B, S)


@dataclass
class TransformerState(SentenceGroupedState):
    """Decoder state.

    Rows are grouped: ``group`` consecutive decoder rows (the k beams of one sentence) share
    one row of ``memory`` (N, S, D), ``src_mask`` (N, S) and the per-layer cross-attention
    projections (N, H, S, Dh), so a beam reorder gathers only the self-attention caches
    (N * group, H, t, Dh) — the cross-attention keys/values change only when a sentence
    leaves — and cross-attention runs the group's rows as ``group`` queries of one sentence.
    ``preallocate``: the self-attention caches are :class:`KVCache` buffers (from the first
    step on) rather than grown by ``torch.cat``.
    """

    memory: Tensor
    src_mask: Tensor
    cross: list[AttentionState]
    cache: list[Cache | None]
    position: int
    group: int = 1
    preallocate: bool = False

    def repeat_rows(self, n: int, k: int) -> TransformerState:
        """Each row k times in a row; the sentence tensors stay shared (see the class doc)."""
        if self.group != 1 or n != self.memory.size(0):
            return self._ungrouped().select(torch.arange(n).repeat_interleave(k))
        return replace(self, cache=[_repeat_cache(c, k) for c in self.cache], group=k)

    def _gather(self, sentences: Tensor | None, rows: Tensor, group: int) -> TransformerState:
        return TransformerState(
            memory=pick_rows(self.memory, sentences),
            src_mask=pick_rows(self.src_mask, sentences),
            cross=[{k: pick_rows(v, sentences) for k, v in c.items()} for c in self.cross],
            cache=[_select_cache(c, rows) for c in self.cache],
            position=self.position,
            group=group,
            preallocate=self.preallocate,
        )

    def _ungrouped(self) -> TransformerState:
        """The same state with one sentence row per decoder row (group 1)."""
        if self.group == 1:
            return self
        g = self.group

        def spread(t: Tensor) -> Tensor:
            return t.repeat_interleave(g, 0)
        return TransformerState(spread(self.memory), spread(self.src_mask),
                                [{k: spread(v) for k, v in c.items()} for c in self.cross],
                                list(self.cache), self.position, 1, self.preallocate)


class TransformerSeq2Seq(Seq2SeqModel):
    """Embeddings + positions + N encoder layers + N decoder layers + output layer."""

    def __init__(self, *, src_vocab: int, tgt_vocab: int, dim: int, num_heads: int,
                 ff_dim: int, encoder_layers: int, decoder_layers: int, dropout: float,
                 pre_norm: bool, learned_positions: bool, max_positions: int,
                 share_embeddings: bool, tie_output: bool, pad_id: int,
                 attention_dropout: float | None = None,
                 kv_cache: Literal["auto", "grow", "preallocated"] = "auto") -> None:
        """``kv_cache``: how step-by-step decoding keeps the self-attention keys/values:
        ``grow`` (``torch.cat`` per step), ``preallocated`` (:class:`KVCache`), ``auto`` =
        preallocated on a GPU, where fewer and smaller copies per step pay, grown on the CPU
        (as before: its measured speed and outputs stay as they were)."""
        super().__init__()
        self.dim = dim
        self.kv_cache = kv_cache
        self.src_embed = nn.Embedding(src_vocab, dim, padding_idx=pad_id)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(
            tgt_vocab, dim, padding_idx=pad_id)
        self.learned_positions = learned_positions
        if learned_positions:
            self.positions = nn.Embedding(max_positions, dim)
        else:
            self.register_buffer("position_table", sinusoidal_positions(max_positions, dim),
                                 persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(dim, num_heads, ff_dim, dropout, pre_norm,
                                                  attention_dropout)
                                     for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(dim, num_heads, ff_dim, dropout, pre_norm,
                                                  attention_dropout)
                                     for _ in range(decoder_layers))
        self.encoder_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.output = Linear(dim, tgt_vocab)
        if tie_output:
            self.output.weight = self.tgt_embed.weight
        self.drop = Dropout(dropout)

    def _embed(self, embedding: nn.Embedding, ids: Tensor, start: int) -> Tensor:
        t = ids.size(1)
        if self.learned_positions:
            pos = self.positions(torch.arange(start, start + t, device=ids.device))
        else:
            table = self.get_buffer("position_table")
            pos = table[start : start + t]
        return self.drop(embedding(ids) * math.sqrt(self.dim) + pos)

    # ---------------------------------------------------------------- protocol
    def encode(self, src: Tensor, src_mask: Tensor) -> TransformerEncoderOutput:
        return self._encode_layers(self._embed(self.src_embed, src, 0), src_mask)

    def _encode_layers(self, x: Tensor, src_mask: Tensor) -> TransformerEncoderOutput:
        for layer in self.encoder:
            x = layer(x, src_mask)
        return TransformerEncoderOutput(self.encoder_norm(x), src_mask)

    def init_state(self, enc: TransformerEncoderOutput) -> TransformerState:
        cross = [cast(DecoderLayer, layer).cross_attn.precompute(enc.memory)
                 for layer in self.decoder]
        preallocate = self.kv_cache == "preallocated" or (
            self.kv_cache == "auto" and enc.memory.device.type == "cuda")
        return TransformerState(enc.memory, enc.src_mask, cross, [None] * len(self.decoder), 0,
                                preallocate=preallocate)

    def decode(self, tgt_in: Tensor, state: TransformerState, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, TransformerState]:
        """tgt_in (B, T) -> logits (B, T, V), attention (B, T, L, H, S) or None, state.

        From position 0 without a cache it is the teacher-forced pass (causal mask); with a
        cache it continues from ``state.position``.
        """
        x, attention, new_state = self._decode_features(tgt_in, state, need_weights)
        return self.output(x), attention, new_state

    def encode_embedded(self, vectors: Tensor, src_mask: Tensor) -> TransformerEncoderOutput:
        """The encoder layers over a front end's source vectors (B, S, D), which carry
        their own positions (an image's 2-D ones)."""
        return self._encode_layers(self.drop(vectors), src_mask)

    def decoder_features(self, tgt_in: Tensor, state: TransformerState
                         ) -> tuple[Tensor, nn.Linear]:
        """The teacher-forced pass up to the output layer: features (B, T, D) and the layer."""
        x, _, _ = self._decode_features(tgt_in, state)
        return x, self.output

    def _decode_features(self, tgt_in: Tensor, state: TransformerState, need_weights: bool
                         = False) -> tuple[Tensor, Tensor | None, TransformerState]:
        """:meth:`decode` without the output layer: features (B, T, D) after the final norm."""
        x = self._embed(self.tgt_embed, tgt_in, state.position)
        use_cache = state.position > 0 or tgt_in.size(1) == 1
        caches: list[Cache | None] = []
        weights = []
        for layer, cross, cache in zip(self.decoder, state.cross, state.cache, strict=True):
            x, w, kv = layer(x, state.memory, state.src_mask, cross,
                             cache if use_cache else None, need_weights, state.group)
            if state.preallocate and use_cache and not isinstance(kv, KVCache):
                kv = KVCache.of(*kv)  # the first step: the buffers start here
            caches.append(kv)
            if w is not None:
                weights.append(w)
        attention = torch.stack(weights, 2).permute(0, 3, 2, 1, 4) if weights else None
        new_state = replace(state, cache=caches, position=state.position + tgt_in.size(1))
        return self.decoder_norm(x), attention, new_state



# --------------------------------------------------------------------------- config, builder


class TransformerConfig(ModelConfig):
    """``model.arch: transformer``: self-attention encoder and decoder, multi-head
    cross-attention (``attention: multihead``)."""

    arch: Literal["transformer"] = "transformer"
    ff_dim: int = Field(gt=0)
    """Feed-forward size (required)."""
    attention_dropout: float | None = Field(None, ge=0, lt=1)
    """Dropout on the self-attention weights (``None`` = ``dropout``). 0 lets PyTorch's fused
    flash kernel run on CPU (it has no dropout), so attention memory grows linearly, not
    quadratically, with length."""
    pre_norm: bool = True
    """Layer norm before each sub-layer (pre-norm) or after (post-norm)."""
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    """Position encodings."""
    max_positions: int = Field(2048, gt=0)
    """Longest source or output, in subwords."""

    @field_validator("attention")
    @classmethod
    def _multihead(cls, kind: str) -> str:
        if kind != "multihead":
            raise ValueError("model.arch: transformer needs model.attention: multihead "
                             f"(got {kind!r})")
        return kind

    @model_validator(mode="after")
    def _check_transformer(self) -> TransformerConfig:
        if self.embed_dim != self.hidden_dim:
            raise ValueError("model.arch: transformer needs model.embed_dim == model.hidden_dim "
                             f"(got {self.embed_dim} and {self.hidden_dim})")
        if self.copy_attention:
            raise ValueError("model.copy_attention (the pointer-generator) is implemented for "
                             "model.arch: rnn")
        return self

    def max_source_positions(self) -> int | None:
        return self.max_positions

    def attention_layers(self) -> int:
        return self.decoder_layers


def build_transformer(cfg: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int,
                      src_to_tgt: Sequence[int] | None = None) -> TransformerSeq2Seq:
    """Map a Transformer config to the model (``src_to_tgt`` is for the copy mechanism,
    which the Transformer does not have)."""
    if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
        raise ValueError("model.share_embeddings needs equal source and target vocabularies")
    assert cfg.attention_heads is not None  # required for attention: multihead
    return TransformerSeq2Seq(
        src_vocab=src_vocab_size, tgt_vocab=tgt_vocab_size, dim=cfg.hidden_dim,
        num_heads=cfg.attention_heads, ff_dim=cfg.ff_dim, encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers, dropout=cfg.dropout, pre_norm=cfg.pre_norm,
        learned_positions=cfg.positions == "learned", max_positions=cfg.max_positions,
        share_embeddings=cfg.share_embeddings, tie_output=cfg.tie_output, pad_id=PAD_ID,
        attention_dropout=cfg.attention_dropout)
