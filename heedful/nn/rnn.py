"""The RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015).

Encoder: a (bi)directional multi-layer LSTM/GRU over source embeddings; padded positions are
packed away, so a sentence encodes the same alone or inside a padded batch.

Decoder, per target step t (Luong's "global attention" with input feeding):

    h_t      = RNN([y_{t-1}; h~_{t-1}], h_{t-1})           (h~_{t-1} only with input feeding)
    c_t      = Attention(q = h_t, K = V = W_m enc)          (the injected attention module)
    h~_t     = tanh(W_c [h_t; c_t])                         (the attentional hidden state;
                                                            linear without model.attentional_tanh)
    p(y_t)   = softmax(W_o h~_t)                            (:class:`RNNSeq2Seq`)

Without input feeding the RNN runs over the whole target sequence in one call and attention
is computed for all steps at once (much faster to train). Without attention (the
Sutskever/Cho baseline) the decoder sees the source only through its initial state, which a
bridge computes from the encoder's final states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from heedful.decoding.search import SentenceGroupedState, pick_rows
from heedful.nn.attention import NO_ATTENTION, Attention, AttentionState, build_attention
from heedful.nn.model_config import ModelConfig
from heedful.nn.pointer_generator import PointerGenerator, extend_source
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.dropout import Dropout
from heedful.runtime.gemm import Linear
from heedful.tokenizer import PAD_ID, UNK_ID

_RNNS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def bf16_autocast_on_cuda(x: Tensor | PackedSequence) -> bool:
    """Whether ``x`` is on a GPU under bf16 autocast."""
    data = x.data if isinstance(x, PackedSequence) else x
    return (data.is_cuda and torch.is_autocast_enabled("cuda")
            and torch.get_autocast_dtype("cuda") == torch.bfloat16)


def run_rnn(rnn: nn.RNNBase, x: Any, hx: Any = None) -> Any:
    """``rnn(x, hx)``, except on a GPU under bf16 autocast, where it runs in float32.

    Why: PyTorch's autocast sends cuDNN's RNN to float16 whatever the autocast dtype, so a
    bf16 recipe (which has no loss scaling) would train its recurrences in fp16, where small
    gradients underflow. float32 is what the recipe promises for ops that are not matrix
    products of the projections; the products around the RNN stay in bf16."""
    if not bf16_autocast_on_cuda(x):
        return rnn(x, hx)
    with torch.autocast("cuda", enabled=False):
        x = x.float()
        if isinstance(hx, tuple):
            hx = tuple(h.float() for h in hx)
        elif hx is not None:
            hx = hx.float()
        return rnn(x, hx)


class RNNEncoder(nn.Module):
    """(B, S, E) embeddings -> states (B, S, num_directions * hidden_dim) and final states."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, rnn_type: str,
                 bidirectional: bool, dropout: float) -> None:
        super().__init__()
        self.rnn = _RNNS[rnn_type](
            embed_dim, hidden_dim, num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0)
        self.is_lstm = rnn_type == "lstm"
        self.num_directions = 2 if bidirectional else 1
        self.output_dim = hidden_dim * self.num_directions

    def forward(self, emb: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns (states (B, S, D), final h (B, D), final c (B, D) or None) where D =
        output_dim and the finals are the top layer's, directions concatenated."""
        lengths = src_mask.sum(1).cpu()
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out_packed, final = run_rnn(self.rnn, packed)
        states, _ = pad_packed_sequence(out_packed, batch_first=True,
                                        total_length=emb.size(1))
        h, c = final if self.is_lstm else (final, None)
        return states, self._top(h), self._top(c) if c is not None else None

    def _top(self, h: Tensor) -> Tensor:
        # h: (layers * dirs, B, H) -> top layer, directions concatenated: (B, dirs * H)
        top = h[-self.num_directions:]
        return top.transpose(0, 1).reshape(h.size(1), -1)


@dataclass
class RNNDecoderState(SentenceGroupedState):
    """Everything the RNN decoder carries between steps; batch axis listed per field.

    hidden/cell: (L, B, H); feed: (B, H) previous attentional state (input feeding) or None;
    memory: (N, S, H) projected encoder states (keys = values); src_mask: (N, S);
    attention: the attention variant's per-source state (batch-first tensors, N rows);
    copy_ids: (B, S) source ids in the extended vocabulary (copy mechanism) or None;
    num_extra: extra (out-of-vocabulary) ids of the batch, shared by all rows.

    Rows are grouped as in :class:`heedful.nn.transformer.TransformerState`: ``group``
    consecutive decoder rows (the k beams of one sentence) share one sentence row of
    ``memory``, ``src_mask`` and ``attention`` (N = B / group), so a beam reorder gathers only
    hidden, cell and feed, and attention runs a sentence's rows as ``group`` queries of it.
    ``shareable`` says whether the attention state may be shared: not when it changes with
    every step of a row (coverage), nor with the copy mechanism's per-row ids.
    """

    hidden: Tensor
    cell: Tensor | None
    feed: Tensor | None
    memory: Tensor
    src_mask: Tensor
    attention: AttentionState
    copy_ids: Tensor | None = None
    num_extra: int = 0
    group: int = 1
    shareable: bool = False

    def repeat_rows(self, n: int, k: int) -> RNNDecoderState:
        """Each row k times in a row; the sentence tensors stay shared where allowed."""
        if not self.shareable or self.copy_ids is not None or self.group != 1 \
                or n != self.memory.size(0):
            return self.select(torch.arange(n).repeat_interleave(k))
        return replace(
            self,
            hidden=self.hidden.repeat_interleave(k, 1),
            cell=None if self.cell is None else self.cell.repeat_interleave(k, 1),
            feed=None if self.feed is None else self.feed.repeat_interleave(k, 0),
            group=k,
        )

    def _gather(self, sentences: Tensor | None, rows: Tensor, group: int) -> RNNDecoderState:
        return replace(
            self,
            hidden=self.hidden.index_select(1, rows),
            cell=None if self.cell is None else self.cell.index_select(1, rows),
            feed=None if self.feed is None else self.feed.index_select(0, rows),
            memory=pick_rows(self.memory, sentences),
            src_mask=pick_rows(self.src_mask, sentences),
            attention={k: pick_rows(v, sentences) for k, v in self.attention.items()},
            copy_ids=None if self.copy_ids is None else self.copy_ids.index_select(0, rows),
            group=group,
        )

    def _ungrouped(self) -> RNNDecoderState:
        """The same state with one sentence row per decoder row (group 1)."""
        g = self.group

        def spread(t: Tensor) -> Tensor:
            return t.repeat_interleave(g, 0)
        return replace(self, memory=spread(self.memory), src_mask=spread(self.src_mask),
                       attention={k: spread(v) for k, v in self.attention.items()}, group=1)


class RNNDecoder(nn.Module):
    """An LSTM/GRU decoder with an injected attention module (or none)."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, rnn_type: str,
                 memory_dim: int, attention: Attention | None, input_feeding: bool,
                 dropout: float, attentional_tanh: bool = True) -> None:
        super().__init__()
        if attention is None and input_feeding:
            raise ValueError("input feeding needs an attention module")
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.is_lstm = rnn_type == "lstm"
        self.attention = attention
        self.input_feeding = input_feeding
        self.attentional_tanh = attentional_tanh
        self.rnn = _RNNS[rnn_type](
            embed_dim + (hidden_dim if input_feeding else 0), hidden_dim, num_layers,
            batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        # keys and values: encoder states projected to the decoder's size
        self.memory_proj = Linear(memory_dim, hidden_dim, bias=False)
        # bridge: encoder final states -> initial decoder states, one slice per layer
        self.bridge_h = Linear(memory_dim, num_layers * hidden_dim)
        self.bridge_c = Linear(memory_dim, num_layers * hidden_dim) if self.is_lstm else None
        self.combine = Linear(2 * hidden_dim, hidden_dim, bias=False) if attention else None
        self.dropout = Dropout(dropout)

    def init_state(self, memory: Tensor, src_mask: Tensor, final_h: Tensor,
                   final_c: Tensor | None) -> RNNDecoderState:
        b = memory.size(0)

        def bridge(layer: nn.Linear, final: Tensor) -> Tensor:
            # (B, L * H) -> (L, B, H)
            return torch.tanh(layer(final)).view(b, self.num_layers, -1).transpose(0, 1)

        hidden = bridge(self.bridge_h, final_h).contiguous()
        cell = None
        if self.bridge_c is not None:
            cell = bridge(self.bridge_c, final_c if final_c is not None else final_h)
            cell = cell.contiguous()
        projected = self.memory_proj(memory)
        feed = memory.new_zeros(b, self.hidden_dim) if self.input_feeding else None
        attn_state = self.attention.precompute(projected) if self.attention else {}
        shareable = self.attention is None or not self.attention.state_per_query
        return RNNDecoderState(hidden, cell, feed, projected, src_mask, attn_state,
                               shareable=shareable)

    def _rnn(self, x: Tensor, state: RNNDecoderState) -> tuple[Tensor, Tensor, Tensor | None]:
        if self.is_lstm:
            out, (h, c) = run_rnn(self.rnn, x, (state.hidden, state.cell))
            return out, h, c
        out, h = run_rnn(self.rnn, x, state.hidden)
        return out, h, None

    def _attend(self, rnn_out: Tensor, state: RNNDecoderState, need_weights: bool
                ) -> tuple[Tensor, Tensor | None, AttentionState]:
        """rnn_out (B, T, H) -> attentional states (B, T, H), weights (B, Hh, T, S)."""
        if self.attention is None or self.combine is None:
            return rnn_out, None, state.attention
        b, t, h = rnn_out.shape
        g = state.group
        # a sentence's g rows become g * T queries of the one sentence: (N, g * T, H)
        context, weights, attn_state = self.attention(
            rnn_out.reshape(b // g, g * t, h), state.memory, state.memory, state.src_mask,
            state.attention, need_weights=need_weights)
        if g > 1:
            context = context.reshape(b, t, -1)
            if weights is not None:  # (N, Hh, g * T, S) -> (B, Hh, T, S)
                n, heads, _, s = weights.shape
                weights = weights.view(n, heads, g, t, s).transpose(1, 2).reshape(b, heads, t, s)
        combined = self.combine(torch.cat([rnn_out, context], -1))
        return (torch.tanh(combined) if self.attentional_tanh else combined), weights, attn_state

    def forward(self, emb: Tensor, state: RNNDecoderState, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None, RNNDecoderState]:
        """Teacher-forced or one-step decoding.

        emb: (B, T, E) target-side input embeddings. Returns the attentional states
        (B, T, H) (dropout applied), the attention weights (B, Hh, T, S) if asked, and the
        state after the last step.
        """
        if not self.input_feeding:
            rnn_out, h, c = self._rnn(self.dropout(emb), state)
            out, weights, attn_state = self._attend(rnn_out, state, need_weights)
            new_state = replace(state, hidden=h, cell=c, attention=attn_state)
            return self.dropout(out), weights, new_state
        outputs, all_weights = [], []
        # unbind, not emb[:, t : t + 1]: a slice's backward zero-fills all of (B, T, E) once
        # per step (quadratic in T; 5% of an RNN update); unbind's backward stacks once
        for step_emb in emb.unbind(1):
            assert state.feed is not None
            x = torch.cat([step_emb.unsqueeze(1), state.feed.unsqueeze(1)], -1)
            rnn_out, h, c = self._rnn(self.dropout(x), state)
            out, weights, attn_state = self._attend(rnn_out, state, need_weights)
            state = replace(state, hidden=h, cell=c, feed=out.squeeze(1), attention=attn_state)
            outputs.append(out)
            if weights is not None:
                all_weights.append(weights)
        stacked = torch.cat(all_weights, 2) if all_weights else None
        return self.dropout(torch.cat(outputs, 1)), stacked, state


# --------------------------------------------------------------------------- the model


@dataclass
class RNNEncoderOutput:
    """memory: (B, S, D) encoder states; src_mask: (B, S); final_h/final_c: (B, D) or None;
    copy_ids: (B, S) source ids in the extended target vocabulary and oov_src_ids
    (num_extra,) the source ids behind the extra ids (copy mechanism only)."""

    memory: Tensor
    src_mask: Tensor
    final_h: Tensor
    final_c: Tensor | None
    copy_ids: Tensor | None = None
    oov_src_ids: Tensor | None = None


class RNNSeq2Seq(Seq2SeqModel):
    """The RNN attention encoder-decoder. Modules are injected; see :func:`build_rnn`."""

    def __init__(self, src_embed: nn.Embedding, tgt_embed: nn.Embedding, encoder: RNNEncoder,
                 decoder: RNNDecoder, output: nn.Linear, dropout: float,
                 copy: PointerGenerator | None = None,
                 src_to_tgt: Sequence[int] | None = None) -> None:
        super().__init__()
        self.src_embed, self.tgt_embed = src_embed, tgt_embed
        self.encoder, self.decoder, self.output = encoder, decoder, output
        self.embed_dropout = Dropout(dropout)
        self.copy = copy
        if copy is not None:
            # source id -> target id of the same piece, -1 if missing; saved with the weights
            # (the identity until the tokenizer's map is set)
            mapping = (torch.tensor(src_to_tgt, dtype=torch.long) if src_to_tgt is not None
                       else torch.arange(src_embed.num_embeddings))
            self.register_buffer("src_to_tgt", mapping)

    def encode(self, src: Tensor, src_mask: Tensor) -> RNNEncoderOutput:
        memory, final_h, final_c = self.encoder(self.embed_dropout(self.src_embed(src)), src_mask)
        copy_ids = oov_src_ids = None
        if self.copy is not None:
            copy_ids, oov_src_ids = extend_source(src, self.get_buffer("src_to_tgt"),
                                                  self.output.out_features)
        return RNNEncoderOutput(memory, src_mask, final_h, final_c, copy_ids, oov_src_ids)

    def init_state(self, enc: RNNEncoderOutput) -> RNNDecoderState:
        state = self.decoder.init_state(enc.memory, enc.src_mask, enc.final_h, enc.final_c)
        if enc.copy_ids is not None and enc.oov_src_ids is not None:
            state = replace(state, copy_ids=enc.copy_ids, num_extra=enc.oov_src_ids.numel())
        return state

    def decode(self, tgt_in: Tensor, state: RNNDecoderState, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, RNNDecoderState]:
        """tgt_in (B, T) -> logits (B, T, V), attention (B, T, L=1, H, S) or None, state.

        With the copy mechanism the "logits" are the final log-probabilities over the
        extended vocabulary (B, T, V + num_extra); a copied extra id fed back as input is
        embedded as <unk>."""
        if self.copy is not None:
            tgt_in = tgt_in.masked_fill(tgt_in >= self.output.out_features, UNK_ID)
        emb = self.tgt_embed(tgt_in)
        out, weights, state = self.decoder(emb, state, need_weights or self.copy is not None)
        attention = None
        if weights is not None and need_weights:
            attention = weights.permute(0, 2, 1, 3).unsqueeze(2)  # (B, T, 1, H, S)
        logits = self.output(out)
        if self.copy is not None:
            assert weights is not None and state.copy_ids is not None
            logits = self.copy(logits, out, emb, weights.mean(1), state.copy_ids,
                               state.num_extra)
        return logits, attention, state

    def encode_embedded(self, vectors: Tensor, src_mask: Tensor) -> RNNEncoderOutput:
        """The (bi)RNN over a front end's source vectors (B, S, E) — for an image, its
        memory slots in column-major order (a prefix mask, as packing needs)."""
        memory, final_h, final_c = self.encoder(vectors, src_mask)
        return RNNEncoderOutput(memory, src_mask, final_h, final_c)

    def output_features(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor
                        ) -> tuple[Tensor, nn.Linear] | None:
        """The teacher-forced decoder outputs (B, T, D) and the output layer; None with the
        copy mechanism (its output mixes the layer with copy attention)."""
        if self.copy is not None:
            return None
        return self.decoder_features(tgt_in, self.init_state(self.encode(src, src_mask)))

    def decoder_features(self, tgt_in: Tensor, state: RNNDecoderState
                         ) -> tuple[Tensor, nn.Linear] | None:
        if self.copy is not None:
            return None
        out, _, _ = self.decoder(self.tgt_embed(tgt_in), state, False)
        return out, self.output



# --------------------------------------------------------------------------- config, builder


class RNNConfig(ModelConfig):
    """``model.arch: rnn``: the (bi)LSTM/GRU encoder-decoder with any attention variant."""

    arch: Literal["rnn"] = "rnn"
    rnn_type: Literal["lstm", "gru"] = "lstm"
    """The recurrent cell."""
    bidirectional: bool = True
    """A bidirectional encoder."""
    encoder_hidden_dim: int | None = Field(None, gt=0)
    """Encoder units per direction; ``None`` = hidden_dim / 2 if bidirectional else hidden_dim."""
    input_feeding: bool = True
    """Feed the attentional hidden state back as input (Luong 2015); off = faster."""
    attentional_tanh: bool = True
    """h~ = tanh(W_c [h; c]) (Luong 2015, Joey NMT) or, off, the linear W_c [h; c]
    (OpenNMT-py's ``mlp`` attention). With additive attention, input feeding and a constant
    learning rate without warm-up the tanh saturates within a few hundred updates (|h~| ~ 1
    everywhere, the loss stuck at the unigram level; measured) — off avoids that."""

    @model_validator(mode="after")
    def _check_rnn(self) -> RNNConfig:
        if self.attention == "none" and self.input_feeding:
            raise ValueError(
                "model.input_feeding must be false with attention: none (input feeding passes "
                "the attentional state, which a model without attention does not have)")
        if self.bidirectional and self.encoder_hidden_dim is None and self.hidden_dim % 2:
            raise ValueError("model.hidden_dim must be even for a bidirectional encoder "
                             "(or set model.encoder_hidden_dim)")
        return self


def build_rnn(cfg: RNNConfig, src_vocab_size: int, tgt_vocab_size: int,
              src_to_tgt: Sequence[int] | None = None) -> RNNSeq2Seq:
    """Map an RNN config to modules and inject them (the attention into the decoder).

    ``src_to_tgt``: the tokenizer's source-to-target id map, used by the copy mechanism."""
    src_embed = nn.Embedding(src_vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
    if cfg.share_embeddings:
        if src_vocab_size != tgt_vocab_size:
            raise ValueError("model.share_embeddings needs equal source and target vocabularies")
        tgt_embed = src_embed
    else:
        tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
    enc_hidden = cfg.encoder_hidden_dim or (
        cfg.hidden_dim // 2 if cfg.bidirectional else cfg.hidden_dim)
    encoder = RNNEncoder(cfg.embed_dim, enc_hidden, cfg.encoder_layers, cfg.rnn_type,
                         cfg.bidirectional, cfg.dropout)
    attention = None
    if cfg.attention != NO_ATTENTION:
        attention = build_attention(cfg.attention, cfg.hidden_dim, cfg.hidden_dim,
                                    cfg.attention_heads or 1, cfg.local_window)
    decoder = RNNDecoder(cfg.embed_dim, cfg.hidden_dim, cfg.decoder_layers, cfg.rnn_type,
                         encoder.output_dim, attention,
                         cfg.input_feeding and attention is not None, cfg.dropout,
                         attentional_tanh=cfg.attentional_tanh)
    output = Linear(cfg.hidden_dim, tgt_vocab_size, bias=True)
    if cfg.tie_output:
        output.weight = tgt_embed.weight
    copy = PointerGenerator(cfg.hidden_dim, cfg.embed_dim) if cfg.copy_attention else None
    return RNNSeq2Seq(src_embed, tgt_embed, encoder, decoder, output, cfg.dropout, copy,
                      src_to_tgt)
