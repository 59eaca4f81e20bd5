"""Convolutional sequence to sequence learning (Gehring et al. 2017, "ConvS2S"; fairseq's
``fconv``): attention over a convolutional encoder, attending in every decoder layer.

With e_j = w_j + p_j the source embeddings (token plus learned position, §3.1) and g_i the
target ones:

* a block (§3.2): h^l = GLU(conv_k(h^{l-1})) + h^{l-1}, the sum times sqrt(0.5) (§3.4);
  GLU([A B]) = A ⊗ σ(B); the encoder's convolutions are centred (padding (k-1)/2 each side,
  padded source positions zeroed before each one, as fairseq does, so a sentence encodes the
  same alone or in a padded batch), the decoder's causal (k-1 positions of left padding);
* encoder output z^u = W_out h^L; the keys are z^u, the values (z^u + e) · sqrt(0.5) (§3.3);
  the gradient into the encoder's stack is scaled by 1 / (2 x the number of attention layers)
  (§3.4; fairseq's ``GradMultiply``), the embedding's path into the values is not;
* in every decoder layer l (§3.3): the query d^l_i = (W_d h^l_i + b_d + g_i) · sqrt(0.5),
  a^l_ij = softmax_j(d^l_i · z^u_j) (the registered ``dot`` attention), the context
  c^l_i = sum_j a^l_ij (z^u_j + e_j) times m · sqrt(1/m) (m the source length, §3.4), projected
  back and added to h^l_i through a residual (times sqrt(0.5));
* output: p(y_{i+1}) = softmax(W_o (W_2 h^L_i)).

Every convolution and linear map inside the network is weight-normalised (Salimans & Kingma
2016), its gain initialised so the initial weights have the paper's scale (§3.4): rows of norm
sqrt(1 - p) into a linear map, 2 sqrt(1 - p) into a GLU (p the dropout).

Incremental decoding: the decoder state holds, per layer, the last k - 1 inputs of its
convolution; a step appends one column and convolves the k-column window, so it costs one
column per layer. The teacher-forced pass is the same computation from zero buffers.

The model implements the decoding protocol of :mod:`heedful.decoding.search`; its config
(:class:`ConvConfig`) and builder (:func:`build_conv`) close the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from heedful.decoding.search import SentenceGroupedState, pick_rows
from heedful.nn.attention import Attention, build_attention
from heedful.nn.model_config import ModelConfig
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.dropout import Dropout
from heedful.runtime.gemm import Linear, linear
from heedful.runtime.precision import active_autocast_dtype
from heedful.tokenizer import PAD_ID

SQRT_HALF = math.sqrt(0.5)


class ScaleGradient(torch.autograd.Function):
    """The identity forward; the gradient times ``scale`` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    return x if scale == 1.0 else ScaleGradient.apply(x, scale)


class NormLinear(nn.Module):
    """A weight-normalised linear map: weight = g · v / ||v|| per output row.

    The direction v (``weight_v``) gets the generic initialisation (any scale: only its
    direction counts), the gain g (``weight_g``, one per output) starts at ``gain``, the row
    norm the paper's initialisation gives in expectation."""

    def __init__(self, in_dim: int, out_dim: int, gain: float) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.xavier_uniform_(self.weight_v)
        self.weight_g = nn.Parameter(torch.full((out_dim,), gain))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def weight(self) -> Tensor:
        v = self.weight_v
        return v * (self.weight_g / v.norm(dim=1)).unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight(), self.bias)


class NormConv(NormLinear):
    """A weight-normalised 1-D convolution over time, batch-first, without padding:
    window (B, T + k - 1, C_in) -> (B, T, C_out).

    The weight is ``NormLinear``'s over the flattened (C_in, k) window of each output position
    (``nn.Conv1d``'s weight layout, flattened), normalised per output channel. The convolution
    runs as a 2-D convolution over a (B, C_in, 1, T + k - 1) channels-last *view* of the
    window: batch-first (B, T, C) is exactly the channels-last layout, so oneDNN (and cuDNN)
    read the activations in place and write (B, T, C_out) directly. ``F.conv1d`` over the
    transposed window copied both ways: the channels-last form takes 0.6x its time for a
    conv-small layer with its GLU, forward + backward (bf16 autocast; 0.75x in float32)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, gain: float) -> None:
        super().__init__(in_dim * kernel_size, out_dim, gain)
        self.kernel_size = kernel_size

    def forward(self, window: Tensor) -> Tensor:
        out_dim = self.weight_v.size(0)
        if window.size(1) == self.kernel_size:  # one output column (a decoding step)
            # one product over the flattened window: a convolution's set-up costs more here
            flat = window.transpose(1, 2).reshape(window.size(0), -1)  # (B, C_in * k)
            return linear(flat, self.weight(), self.bias).unsqueeze(1)
        weight = self.weight().view(out_dim, -1, 1, self.kernel_size)  # (out, in, 1, k)
        image = window.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C_in, 1, T'), no copy
        out = F.conv2d(image, weight.contiguous(memory_format=torch.channels_last), self.bias)
        return out.permute(0, 2, 3, 1).flatten(1, 2)  # (B, T, C_out)


def glu_gain(dropout: float) -> float:
    """The initial row norm of a map into a GLU: 2 sqrt(1 - p) (Gehring et al. §3.4)."""
    return 2.0 * math.sqrt(1.0 - dropout)


class ConvEncoder(nn.Module):
    """Embeddings e (B, S, E) -> keys z (B, S, E) and values (z + e) · sqrt(0.5) (B, S, E)."""

    def __init__(self, embed_dim: int, channels: int, num_layers: int, kernel_size: int,
                 dropout: float, grad_scale: float) -> None:
        super().__init__()
        self.fc_in = NormLinear(embed_dim, channels, math.sqrt(1.0 - dropout))
        self.convs = nn.ModuleList(NormConv(channels, 2 * channels, kernel_size,
                                            glu_gain(dropout)) for _ in range(num_layers))
        self.fc_out = NormLinear(channels, embed_dim, 1.0)
        self.pad_left, self.pad_right = (kernel_size - 1) // 2, kernel_size // 2
        self.drop = Dropout(dropout)
        self.grad_scale = grad_scale

    def forward(self, emb: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        padded = ~src_mask.unsqueeze(-1)  # (B, S, 1)
        x = self.fc_in(emb)
        for conv in self.convs:
            residual = x
            # padding holds zeros, as the ends do: a sentence encodes the same alone
            x = self.drop(x.masked_fill(padded, 0.0))
            x = F.glu(conv(F.pad(x, (0, 0, self.pad_left, self.pad_right))), dim=-1)
            x = (x + residual) * SQRT_HALF
        z = scale_gradient(self.fc_out(x).masked_fill(padded, 0.0), self.grad_scale)
        return z, (z + emb) * SQRT_HALF


class ConvDecoderLayer(nn.Module):
    """A causal GLU convolution, then attention with the target embedding in the query; both
    through residuals. Keys, values and mask hold N sentences, each shared by ``group``
    consecutive rows of x (see :class:`ConvState`)."""

    def __init__(self, embed_dim: int, channels: int, kernel_size: int, dropout: float,
                 attention: Attention) -> None:
        super().__init__()
        self.conv = NormConv(channels, 2 * channels, kernel_size, glu_gain(dropout))
        self.query_proj = NormLinear(channels, embed_dim, 1.0)
        self.context_proj = NormLinear(embed_dim, channels, 1.0)
        self.attention = attention
        self.drop = Dropout(dropout)
        self.history = kernel_size - 1

    def forward(self, x: Tensor, buffer: Tensor, target_emb: Tensor, state: ConvState,
                need_weights: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        """x (B, T, C), buffer (B, k - 1, C) the inputs before x, target_emb (B, T, E) ->
        (B, T, C), weights (B, 1, T, S) or None, the new buffer."""
        residual = x
        window = torch.cat([buffer, self.drop(x)], 1)  # (B, k - 1 + T, C)
        h = F.glu(self.conv(window), dim=-1)
        query = (self.query_proj(h) + target_emb) * SQRT_HALF
        b, t, e = query.shape
        g = state.group  # a sentence's rows become that many queries of it: (N, g * T, E)
        context, weights, _ = self.attention(query.reshape(b // g, g * t, e), state.keys,
                                             state.values, state.src_mask, {}, need_weights)
        context = (context * state.context_scale.to(context.dtype)).reshape(b, t, e)
        if weights is not None and g > 1:  # (N, 1, g * T, S) -> (N * g, 1, T, S)
            weights = weights.reshape(b, 1, t, weights.size(-1))
        h = (self.context_proj(context) + h) * SQRT_HALF
        return (h + residual) * SQRT_HALF, weights, window[:, window.size(1) - self.history:]


@dataclass
class ConvEncoderOutput:
    keys: Tensor  # (B, S, E): z
    values: Tensor  # (B, S, E): (z + e) sqrt(0.5)
    src_mask: Tensor  # (B, S)


@dataclass
class ConvState(SentenceGroupedState):
    """Decoder state.

    Rows are grouped: ``group`` consecutive decoder rows (the k beams of one sentence) share
    one row of the per-sentence tensors ``keys``, ``values`` (N, S, E), ``src_mask`` (N, S) and
    ``context_scale`` (N, 1, 1) (sqrt of the source length, §3.4); the per-row ``buffers``
    (N * group, k - 1, C), one per layer, hold the last k - 1 inputs of each layer's
    convolution, and ``position`` is the next target position.
    """

    keys: Tensor
    values: Tensor
    src_mask: Tensor
    context_scale: Tensor
    buffers: list[Tensor]
    position: int
    group: int = 1

    @property
    def memory(self) -> Tensor:
        """The per-sentence encoder output (the keys), by the name every state uses."""
        return self.keys

    def repeat_rows(self, n: int, k: int) -> ConvState:
        """Each row k times in a row; the sentence tensors stay shared (see the class doc)."""
        if self.group != 1 or n != self.keys.size(0):
            return self._ungrouped().select(torch.arange(n).repeat_interleave(k))
        return replace(self, buffers=[b.repeat_interleave(k, 0) for b in self.buffers],
                       group=k)

    def _gather(self, sentences: Tensor | None, rows: Tensor, group: int) -> ConvState:
        return ConvState(pick_rows(self.keys, sentences), pick_rows(self.values, sentences),
                         pick_rows(self.src_mask, sentences),
                         pick_rows(self.context_scale, sentences),
                         [b.index_select(0, rows) for b in self.buffers], self.position, group)

    def _ungrouped(self) -> ConvState:
        """The same state with one sentence row per decoder row (group 1)."""
        if self.group == 1:
            return self
        g = self.group

        def spread(t: Tensor) -> Tensor:
            return t.repeat_interleave(g, 0)
        return ConvState(spread(self.keys), spread(self.values), spread(self.src_mask),
                         spread(self.context_scale), list(self.buffers), self.position, 1)


class ConvSeq2Seq(Seq2SeqModel):
    """Embeddings + learned positions, a convolutional encoder, a convolutional decoder with
    attention in every layer, the output layer. Modules are injected; see :func:`build_conv`."""

    def __init__(self, src_embed: nn.Embedding, tgt_embed: nn.Embedding,
                 src_positions: nn.Embedding, tgt_positions: nn.Embedding,
                 encoder: ConvEncoder, layers: Sequence[ConvDecoderLayer], channels: int,
                 output: nn.Linear, dropout: float) -> None:
        super().__init__()
        self.src_embed, self.tgt_embed = src_embed, tgt_embed
        self.src_positions, self.tgt_positions = src_positions, tgt_positions
        self.encoder = encoder
        self.fc_in = NormLinear(tgt_embed.embedding_dim, channels, math.sqrt(1.0 - dropout))
        self.decoder = nn.ModuleList(layers)
        self.fc_out = NormLinear(channels, output.in_features, 1.0)
        self.output = output
        self.drop = Dropout(dropout)
        self.channels = channels

    def _embed(self, embedding: nn.Embedding, positions: nn.Embedding, ids: Tensor,
               start: int) -> Tensor:
        where = torch.arange(start, start + ids.size(1), device=ids.device)
        emb = embedding(ids) + positions(where)
        # Under autocast the whole residual stream runs in the autocast dtype: a float32
        # embedding would promote every sum it joins (queries, values, contexts) back to
        # float32, and each product would cast it down again, forward and backward.
        dtype = active_autocast_dtype(emb.device)
        return self.drop(emb if dtype is None else emb.to(dtype))

    # ---------------------------------------------------------------- protocol
    def encode(self, src: Tensor, src_mask: Tensor) -> ConvEncoderOutput:
        keys, values = self.encoder(self._embed(self.src_embed, self.src_positions, src, 0),
                                    src_mask)
        return ConvEncoderOutput(keys, values, src_mask)

    def init_state(self, enc: ConvEncoderOutput) -> ConvState:
        b = enc.keys.size(0)
        length = enc.src_mask.sum(1).to(enc.keys.dtype)
        buffers = [enc.keys.new_zeros(b, cast(ConvDecoderLayer, layer).history, self.channels)
                   for layer in self.decoder]
        return ConvState(enc.keys, enc.values, enc.src_mask, length.sqrt().view(b, 1, 1),
                         buffers, 0)

    def decode(self, tgt_in: Tensor, state: ConvState, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, ConvState]:
        """tgt_in (B, T) -> logits (B, T, V), attention (B, T, L, 1, S) or None, state.

        Continues from ``state.position`` with the layers' buffered inputs: from a fresh
        state it is the teacher-forced pass, one token at a time it is incremental decoding.
        """
        features, attention, state = self._decode_features(tgt_in, state, need_weights)
        return self.output(features), attention, state

    def output_features(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor
                        ) -> tuple[Tensor, nn.Linear]:
        """The teacher-forced pass up to the output layer: features (B, T, E) and the layer."""
        features, _, _ = self._decode_features(tgt_in, self.init_state(self.encode(src, src_mask)))
        return features, self.output

    def _decode_features(self, tgt_in: Tensor, state: ConvState, need_weights: bool = False
                         ) -> tuple[Tensor, Tensor | None, ConvState]:
        """:meth:`decode` without the output layer: features (B, T, E) after its dropout."""
        target_emb = self._embed(self.tgt_embed, self.tgt_positions, tgt_in, state.position)
        x = self.fc_in(target_emb)
        buffers, weights = [], []
        for layer, buffer in zip(self.decoder, state.buffers, strict=True):
            x, w, buffer = layer(x, buffer, target_emb, state, need_weights)
            buffers.append(buffer)
            if w is not None:
                weights.append(w.squeeze(1))  # (B, T, S)
        attention = torch.stack(weights, 2).unsqueeze(3) if need_weights else None
        return self.drop(self.fc_out(x)), attention, replace(
            state, buffers=buffers, position=state.position + tgt_in.size(1))


# --------------------------------------------------------------------------- config, builder


class ConvConfig(ModelConfig):
    """``model.arch: conv``: the convolutional encoder-decoder (ConvS2S) with dot-product
    attention in every decoder layer. ``hidden_dim`` is the convolutions' channels,
    ``embed_dim`` the embeddings' (and attention's) size."""

    arch: Literal["conv"] = "conv"
    attention: str = "dot"
    """ConvS2S attends with the plain dot product (the only variant it takes)."""
    kernel_size: int = Field(3, gt=0)
    """The convolutions' width k, encoder and decoder."""
    max_positions: int = Field(1024, gt=0)
    """Longest source or output, in subwords (the learned position tables' size)."""

    @field_validator("attention")
    @classmethod
    def _dot(cls, kind: str) -> str:
        if kind != "dot":
            raise ValueError("model.arch: conv needs model.attention: dot (the paper's "
                             f"attention, in every decoder layer; got {kind!r})")
        return kind

    @model_validator(mode="after")
    def _check_conv(self) -> ConvConfig:
        if self.copy_attention:
            raise ValueError("model.copy_attention (the pointer-generator) is implemented for "
                             "model.arch: rnn")
        return self

    def output_input_dim(self) -> int:
        return self.embed_dim

    def max_source_positions(self) -> int | None:
        return self.max_positions

    def attention_layers(self) -> int:
        return self.decoder_layers


def build_conv(cfg: ConvConfig, src_vocab_size: int, tgt_vocab_size: int,
               src_to_tgt: Sequence[int] | None = None) -> ConvSeq2Seq:
    """Map a conv config to modules and inject them (a ``dot`` attention into each decoder
    layer); ``src_to_tgt`` is for the copy mechanism, which ConvS2S does not have."""
    e, c, p = cfg.embed_dim, cfg.hidden_dim, cfg.dropout
    src_embed = nn.Embedding(src_vocab_size, e, padding_idx=PAD_ID)
    if cfg.share_embeddings:
        if src_vocab_size != tgt_vocab_size:
            raise ValueError("model.share_embeddings needs equal source and target vocabularies")
        tgt_embed = src_embed
    else:
        tgt_embed = nn.Embedding(tgt_vocab_size, e, padding_idx=PAD_ID)
    encoder = ConvEncoder(e, c, cfg.encoder_layers, cfg.kernel_size, p,
                          grad_scale=1.0 / (2.0 * cfg.decoder_layers))
    layers = [ConvDecoderLayer(e, c, cfg.kernel_size, p, build_attention(cfg.attention, e, e))
              for _ in range(cfg.decoder_layers)]
    output = Linear(e, tgt_vocab_size)
    if cfg.tie_output:
        output.weight = tgt_embed.weight
    return ConvSeq2Seq(src_embed, tgt_embed, nn.Embedding(cfg.max_positions, e),
                       nn.Embedding(cfg.max_positions, e), encoder, layers, c, output, p)
