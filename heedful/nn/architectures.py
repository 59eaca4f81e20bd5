"""Seq2Seq: embeddings + encoder + decoder + output layer, and ``build_model(cfg)``.

The decoding protocol (what :mod:`heedful.decoding.search` relies on, and nothing more):

* ``encode(src (B, S), src_mask (B, S)) -> EncoderOutput``
* ``init_state(encoder_output) -> state`` (a state implements ``select(index)``)
* ``step(prev_tokens (B,), state, need_weights) -> (log_probs (B, V), state,
  attention (B, L, H, S) or None)``

and, for training, ``forward(src, src_mask, tgt_in) -> logits (B, T, V)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from heedful.config import ModelConfig
from heedful.decoding.search import StepFromDecode
from heedful.nn.attention import build_attention
from heedful.nn.pointer_generator import PointerGenerator, extend_source
from heedful.nn.rnn import RNNDecoder, RNNDecoderState, RNNEncoder
from heedful.nn.transformer import TransformerSeq2Seq
from heedful.runtime.dropout import Dropout
from heedful.runtime.gemm import Linear
from heedful.tokenizer import PAD_ID, UNK_ID


@dataclass
class EncoderOutput:
    """memory: (B, S, D) encoder states; src_mask: (B, S); final_h/final_c: (B, D) or None;
    copy_ids: (B, S) source ids in the extended target vocabulary and oov_src_ids
    (num_extra,) the source ids behind the extra ids (copy mechanism only)."""

    memory: Tensor
    src_mask: Tensor
    final_h: Tensor
    final_c: Tensor | None
    copy_ids: Tensor | None = None
    oov_src_ids: Tensor | None = None


class Seq2Seq(StepFromDecode, nn.Module):
    """The attention encoder-decoder. Modules are injected; see :func:`build_model`."""

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

    def encode(self, src: Tensor, src_mask: Tensor) -> EncoderOutput:
        memory, final_h, final_c = self.encoder(self.embed_dropout(self.src_embed(src)), src_mask)
        copy_ids = oov_src_ids = None
        if self.copy is not None:
            copy_ids, oov_src_ids = extend_source(src, self.get_buffer("src_to_tgt"),
                                                  self.output.out_features)
        return EncoderOutput(memory, src_mask, final_h, final_c, copy_ids, oov_src_ids)

    def init_state(self, enc: EncoderOutput) -> RNNDecoderState:
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

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V)."""
        logits, _, _ = self.decode(tgt_in, self.init_state(self.encode(src, src_mask)))
        return logits


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                src_to_tgt: Sequence[int] | None = None) -> Model:
    """The one place that maps a model config to modules and injects them.

    ``src_to_tgt``: the tokenizer's source-to-target id map (``Tokenizer.src_to_tgt()``), used
    by the copy mechanism; a loaded checkpoint restores it with the weights."""
    if cfg.arch == "transformer":
        if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("model.share_embeddings needs equal source and target vocabularies")
        assert cfg.attention_heads is not None and cfg.ff_dim is not None  # validated in config
        transformer = TransformerSeq2Seq(
            src_vocab_size, tgt_vocab_size, cfg.hidden_dim, cfg.attention_heads, cfg.ff_dim,
            cfg.encoder_layers, cfg.decoder_layers, cfg.dropout, cfg.pre_norm,
            cfg.positions == "learned", cfg.max_positions, cfg.share_embeddings,
            cfg.tie_output, PAD_ID, cfg.attention_dropout)
        _init_weights(transformer)
        return transformer
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
    if cfg.attention != "none":
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
    model = Seq2Seq(src_embed, tgt_embed, encoder, decoder, output, cfg.dropout, copy,
                    src_to_tgt)
    _init_weights(model)
    return model


Model = Seq2Seq | TransformerSeq2Seq
"""Every architecture implements the same protocol (see the module docstring)."""


def _init_weights(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif "bias" in name:
            nn.init.zeros_(p)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=m.embedding_dim ** -0.5)
            with torch.no_grad():
                m.weight[PAD_ID].zero_()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
