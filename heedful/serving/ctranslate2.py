"""Export a heedful Transformer to CTranslate2 (``heedful export RUN --format ctranslate2``).

CTranslate2 (``pip install ctranslate2``) runs Transformer encoder-decoders with its own
optimised kernels; it has no RNN or convolutional decoder, so those models get a clear error.
The mapping:

* embeddings x sqrt(d_model) plus the position table (sinusoidal or learned, copied as is);
* pre-norm or post-norm layers; our fused self-attention ``qkv`` is CTranslate2's fused
  ``linear[0]``; cross-attention: query -> ``linear[0]``, key|value stacked -> ``linear[1]``,
  output -> ``linear[2]`` (no biases there, as in heedful);
* the vocabulary is the SentencePiece model's pieces (ids 0..V-1), with heedful's BOS
  (``<s>``) starting the target and EOS (``</s>``) ending both sides.

To translate with the exported model, give CTranslate2 the SentencePiece pieces of each source
followed by ``</s>`` (what :func:`ct2_source_tokens` returns), as heedful itself feeds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from heedful.checkpoint import CheckpointError, find_checkpoint, load_model_weights
from heedful.config import load_config
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

_KINDS = {"rnn": "an RNN", "conv": "a convolutional (ConvS2S)"}
"""What the export error calls the architectures CTranslate2 has no decoder for."""


def _np(t: torch.Tensor) -> Any:
    return t.detach().float().cpu().numpy()


def _linear(spec: Any, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    spec.weight = _np(weight)
    if bias is not None:
        spec.bias = _np(bias)


def _norm(spec: Any, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _np(norm.weight), _np(norm.bias)


def vocabulary(proc: Any) -> list[str]:
    """Piece strings for ids 0..V-1, with heedful's special ids under CTranslate2's names."""
    pieces = [str(proc.id_to_piece(i)) for i in range(proc.get_piece_size())]
    pieces[PAD_ID], pieces[UNK_ID], pieces[BOS_ID], pieces[EOS_ID] = (
        "<blank>", "<unk>", "<s>", "</s>")
    return pieces


def ct2_source_tokens(tokenizer: Tokenizer, lines: list[str]) -> list[list[str]]:
    """Source pieces + ``</s>``, as the exported model expects them."""
    vocab = vocabulary(tokenizer.src)
    return [[vocab[i] for i in ids] for ids in tokenizer.encode_src(lines)]


def export_ctranslate2(run_dir: Path, out_dir: Path, quantization: str | None = None) -> Path:
    """Convert the run's best checkpoint; returns ``out_dir``."""
    from heedful.nn.architectures import build_model
    from heedful.nn.transformer import TransformerConfig, TransformerSeq2Seq

    config = load_config(run_dir / "config.yaml")
    m = config.model
    if not isinstance(m, TransformerConfig):
        raise CheckpointError(
            f"{run_dir} is {_KINDS.get(m.arch, 'a non-Transformer')} model (model.arch: "
            f"{m.arch}); CTranslate2 runs Transformer encoder-decoders only, so only "
            "Transformer runs can be exported to it")
    try:
        from ctranslate2.specs import common_spec, transformer_spec
    except ImportError:
        raise CheckpointError("--format ctranslate2 needs the ctranslate2 package: pip install "
                              "ctranslate2") from None
    tokenizer = Tokenizer.load(run_dir)
    built = build_model(m, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    load_model_weights(built, find_checkpoint(run_dir))
    assert isinstance(built, TransformerSeq2Seq)
    model: Any = built  # submodules typed loosely: the layout is read attribute by attribute
    spec = transformer_spec.TransformerSpec.from_config(
        (m.encoder_layers, m.decoder_layers), m.attention_heads, pre_norm=m.pre_norm,
        activation=common_spec.Activation.RELU)
    positions = model.positions.weight if model.learned_positions else model.position_table
    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = _np(model.src_embed.weight)
    enc.position_encodings.encodings = _np(positions)
    dec.embeddings.weight = _np(model.tgt_embed.weight)
    dec.position_encodings.encodings = _np(positions)
    if m.pre_norm:
        _norm(enc.layer_norm, model.encoder_norm)
        _norm(dec.layer_norm, model.decoder_norm)
    _linear(dec.projection, model.output.weight, model.output.bias)
    for layer_spec, layer in zip(enc.layer, model.encoder, strict=True):
        sa = layer.self_attn
        _linear(layer_spec.self_attention.linear[0], sa.qkv.weight, sa.qkv.bias)
        _linear(layer_spec.self_attention.linear[1], sa.out.weight, sa.out.bias)
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _ffn(layer_spec.ffn, layer.ff, layer.norm2)
    for layer_spec, layer in zip(dec.layer, model.decoder, strict=True):
        sa, ca = layer.self_attn, layer.cross_attn
        _linear(layer_spec.self_attention.linear[0], sa.qkv.weight, sa.qkv.bias)
        _linear(layer_spec.self_attention.linear[1], sa.out.weight, sa.out.bias)
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _linear(layer_spec.attention.linear[0], ca.query_proj.weight)
        _linear(layer_spec.attention.linear[1],
                torch.cat([ca.key_proj.weight, ca.value_proj.weight], 0))
        _linear(layer_spec.attention.linear[2], ca.out_proj.weight)
        _norm(layer_spec.attention.layer_norm, layer.norm2)
        _ffn(layer_spec.ffn, layer.ff, layer.norm3)
    spec.register_source_vocabulary(vocabulary(tokenizer.src))
    spec.register_target_vocabulary(vocabulary(tokenizer.tgt))
    spec.config.bos_token, spec.config.eos_token = "<s>", "</s>"
    spec.config.unk_token, spec.config.decoder_start_token = "<unk>", "<s>"
    spec.validate()
    spec.optimize(quantization=quantization)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(f"{out_dir} exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    for f in Tokenizer.files(run_dir):  # the SentencePiece model travels with it
        (out_dir / f.name).write_bytes(f.read_bytes())
    return out_dir


def _ffn(spec: Any, ff: Any, norm: torch.nn.LayerNorm) -> None:
    first, last = ff.net[0], ff.net[3]
    _linear(spec.linear_0, first.weight, first.bias)
    _linear(spec.linear_1, last.weight, last.bias)
    _norm(spec.layer_norm, norm)
