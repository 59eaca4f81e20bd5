"""The RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015).

Encoder: a (bi)directional multi-layer LSTM/GRU over source embeddings; padded positions are
packed away, so a sentence encodes the same alone or inside a padded batch.

Decoder, per target step t (Luong's "global attention" with input feeding):

    h_t      = RNN([y_{t-1}; h~_{t-1}], h_{t-1})           (h~_{t-1} only with input feeding)
    c_t      = Attention(q = h_t, K = V = W_m enc)          (the injected attention module)
    h~_t     = tanh(W_c [h_t; c_t])                         (the attentional hidden state;
                                                            linear without model.attentional_tanh)
    p(y_t)   = softmax(W_o h~_t)                            (in :mod:`heedful.nn.architectures`)

Without input feeding the RNN runs over the whole target sequence in one call and attention
is computed for all steps at once (much faster to train). Without attention (the
Sutskever/Cho baseline) the decoder sees the source only through its initial state, which a
bridge computes from the encoder's final states.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from heedful.decoding.search import SentenceGroupedState, pick_rows
from heedful.nn.attention import Attention, AttentionState
from heedful.runtime.dropout import Dropout
from heedful.runtime.gemm import Linear

_RNNS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


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
        out_packed, final = self.rnn(packed)
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

    def _gather(self, sentences: Tensor, rows: Tensor, group: int) -> RNNDecoderState:
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
            out, (h, c) = self.rnn(x, (state.hidden, state.cell))
            return out, h, c
        out, h = self.rnn(x, state.hidden)
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
