"""The architecture registry: ``model.arch`` -> (config class, builder), and ``build_model``.

Every architecture is one module holding its config class (derived from
:class:`heedful.nn.model_config.ModelConfig`), its model (implementing the decoding protocol of
:mod:`heedful.decoding.search`: ``encode``, ``init_state``, ``step``, plus ``decode`` and the
teacher-forced ``forward`` for training) and its builder; adding one is that module and one
entry in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

import torch
from pydantic import Discriminator, Tag
from torch import nn

from heedful.nn.conv import ConvConfig, build_conv
from heedful.nn.model_config import ModelConfig
from heedful.nn.rnn import RNNConfig, build_rnn
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.nn.transformer import TransformerConfig, build_transformer
from heedful.tokenizer import PAD_ID


@dataclass(frozen=True)
class Architecture:
    """A registry entry: the architecture's config class and the builder that maps it (and
    the vocabulary sizes, and the copy mechanism's source-to-target id map) to a model."""

    config: type[ModelConfig]
    build: Callable[[Any, int, int, Sequence[int] | None], Seq2SeqModel]


ARCHITECTURES: dict[str, Architecture] = {
    "rnn": Architecture(RNNConfig, build_rnn),
    "transformer": Architecture(TransformerConfig, build_transformer),
    "conv": Architecture(ConvConfig, build_conv),
}
"""Registered architectures: adding one = a module (config, model, builder) and an entry."""

DEFAULT_ARCH = "rnn"


def _arch_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("arch", DEFAULT_ARCH))
    return str(getattr(value, "arch", DEFAULT_ARCH))


if TYPE_CHECKING:
    AnyModelConfig = ModelConfig
else:
    AnyModelConfig = Annotated[
        Union[tuple(Annotated[a.config, Tag(name)] for name, a in ARCHITECTURES.items())],  # noqa: UP007
        Discriminator(_arch_of)]
"""The type of ``Config.model``: the config class that ``arch`` names (pydantic's
discriminated union, built from the registry)."""


# Config files written by heedful 0.1 hold every key of the one flat model config of that
# version; a key of another architecture that holds the value 0.1 defaulted to (or, for the
# Transformer's input_feeding, required) meant nothing there and is dropped on loading.
_FLAT_0_1_VALUES: dict[str, Any] = {
    "rnn_type": "lstm", "bidirectional": True, "encoder_hidden_dim": None,
    "input_feeding": False, "attentional_tanh": True, "ff_dim": None,
    "attention_dropout": None, "pre_norm": True, "positions": "sinusoidal",
    "max_positions": 2048,
}


def drop_other_architectures_defaults(model: dict[str, Any]) -> dict[str, Any]:
    """A model section without the keys of other architectures that 0.1's flat config
    wrote with their (meaningless) default value; anything else is left for validation."""
    arch = ARCHITECTURES.get(_arch_of(model))
    if arch is None:
        return model
    own = arch.config.model_fields
    return {k: v for k, v in model.items()
            if k in own or k not in _FLAT_0_1_VALUES or v != _FLAT_0_1_VALUES[k]}


def owner_architectures(key: str) -> list[str]:
    """The architectures whose config has option ``key``."""
    return [name for name, a in ARCHITECTURES.items() if key in a.config.model_fields]


def model_config(**fields: Any) -> ModelConfig:
    """A validated model config from keyword arguments (``arch`` picks the class; default
    ``rnn``), e.g. ``model_config(arch="transformer", ...)``."""
    arch = ARCHITECTURES[_arch_of(fields)]
    raw = drop_other_architectures_defaults({"arch": _arch_of(fields), **fields})
    return arch.config.model_validate(raw)


@dataclass(frozen=True)
class Frontend:
    """What a model reads when it is not text (:func:`heedful.config.frontend_of`):
    ``kind`` ``image`` (``size``: the image height) or ``audio`` (``size``: mel bands per
    frame)."""

    kind: str
    size: int


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                src_to_tgt: Sequence[int] | None = None,
                frontend: Frontend | None = None) -> Seq2SeqModel:
    """Look the architecture's builder up, build the model and initialise its weights.

    ``src_to_tgt``: the tokenizer's source-to-target id map (``Tokenizer.src_to_tgt()``), used
    by the copy mechanism; a loaded checkpoint restores it with the weights.
    ``frontend``: the model reads images or audio: the architecture's model behind an image
    or audio encoder (:class:`heedful.vision.model.ImageToText`)."""
    model = ARCHITECTURES[cfg.arch].build(cfg, src_vocab_size, tgt_vocab_size, src_to_tgt)
    if frontend is not None and frontend.kind == "image":
        from heedful.vision.encoder import ImageEncoder
        from heedful.vision.model import ImageToText

        model = ImageToText(ImageEncoder(frontend.size, cfg.embed_dim, cfg.image_channels,
                                         cfg.dropout, cfg.image_position), model)
    elif frontend is not None:
        from heedful.audio.encoder import AudioEncoder
        from heedful.vision.model import ImageToText

        model = ImageToText(AudioEncoder(frontend.size, cfg.embed_dim, cfg.audio_channels,
                                         cfg.dropout), model)
        if cfg.ctc_weight is not None:
            model.add_ctc(_memory_dim(cfg), tgt_vocab_size, cfg.ctc_weight)
    _init_weights(model)
    return model


def _memory_dim(cfg: ModelConfig) -> int:
    """The width of the encoder states the decoder attends over."""
    if isinstance(cfg, RNNConfig):
        per_direction = cfg.encoder_hidden_dim or (
            cfg.hidden_dim // 2 if cfg.bidirectional else cfg.hidden_dim)
        return per_direction * (2 if cfg.bidirectional else 1)
    return cfg.embed_dim


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
