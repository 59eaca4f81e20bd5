"""What every architecture's model config shares, and the attention options' rules.

Each architecture declares its own config class next to its module (``RNNConfig`` in
:mod:`heedful.nn.rnn`, ``TransformerConfig`` in :mod:`heedful.nn.transformer`, ``ConvConfig``
in :mod:`heedful.nn.conv`), derived from
:class:`ModelConfig`; ``model.arch`` picks the class (see :mod:`heedful.nn.architectures`), so
an option that belongs to another architecture is an unknown key, not an "applies only to"
check. The attention variants' options are declared here once, and which variant takes which
option comes from the registry entries in :mod:`heedful.nn.attention`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from heedful.nn.attention import all_variant_options, attention_kinds, variant_options


class ModelConfig(BaseModel):
    """The options every architecture has. ``arch`` is narrowed by each subclass."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              use_attribute_docstrings=True)

    arch: str
    """The architecture (a key of ``heedful.nn.architectures.ARCHITECTURES``)."""
    embed_dim: int = Field(256, gt=0)
    """Token embedding size."""
    hidden_dim: int = Field(512, gt=0)
    """Decoder hidden size; also the common size keys and values are projected to (the
    convolutions' channels for ``arch: conv``)."""
    encoder_layers: int = Field(1, gt=0)
    """Encoder layers."""
    decoder_layers: int = Field(1, gt=0)
    """Decoder layers."""
    attention: str = "scaled_dot"
    """The attention variant (see heedful.nn.attention), or ``none`` for no attention."""
    attention_heads: int | None = Field(None, gt=0)
    """Number of heads; required for ``attention: multihead``, unset otherwise."""
    local_window: int | None = Field(None, gt=0)
    """Window half-width D (the window is 2D + 1 positions); required for ``local`` only."""
    coverage_loss_weight: float | None = Field(None, ge=0)
    """Weight of the coverage loss (See et al. used 1.0); required for ``coverage`` only."""
    coverage_loss_from_step: int = Field(0, ge=0)
    """The coverage loss joins after this many updates (See et al. added it only for a short
    final phase: from the first step it keeps the model from learning to attend at all)."""
    alignment_layer: int = -1
    """The decoder layer whose attention guided alignment supervises and ``heedful align``
    reads in such a run (negative counts from the end; see ``train.guided_alignment_weight``)."""
    alignment_head: int | None = 0
    """That layer's head (None: the mean over its heads)."""
    copy_attention: bool = False
    """Pointer-generator copy mechanism (See et al. 2017; RNN only): mix the vocabulary
    distribution with the attention over source tokens, so source pieces, even ones the target
    vocabulary lacks, can be copied."""
    tie_output: bool = False
    """Tie the output layer to the target embeddings (needs embed_dim == hidden_dim)."""
    share_embeddings: bool = False
    """One embedding matrix for source and target (needs a joint tokenizer)."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout on embeddings and between layers."""
    image_channels: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (16, 32, 64, 128)
    """data.source: image: the channels of the image encoder's four convolution stages
    (:mod:`heedful.vision.encoder`)."""
    audio_channels: PositiveInt = 32
    """data.source: audio: the channels of the audio encoder's two subsampling convolutions
    (:mod:`heedful.audio.encoder`)."""
    ctc_weight: float | None = Field(None, gt=0)
    """data.source: audio: add this weight x a CTC loss over the encoder's memory to the
    training loss (joint CTC-attention, Kim et al. 2017): the monotonic alignment CTC forces
    helps attention find its way through long utterances (None: off)."""
    image_position: Literal["embeddings", "row_encoder"] = "embeddings"
    """data.source: image: how the image encoder's cells learn where they are: a learned row
    embedding plus a sinusoidal column encoding (``embeddings``), or a bidirectional GRU along
    each row of cells started from a learned state per row (``row_encoder``, as im2markup's)."""

    @field_validator("attention")
    @classmethod
    def _known_attention(cls, kind: str) -> str:
        if kind not in attention_kinds():
            *others, last = (repr(k) for k in attention_kinds())
            raise ValueError(f"model.attention: Input should be {', '.join(others)} or {last} "
                             f"(got {kind!r})")
        return kind

    @model_validator(mode="after")
    def _check_shared(self) -> ModelConfig:
        self._check_attention_options()
        if self.tie_output and self.embed_dim != self.output_input_dim():
            raise ValueError(
                f"model.tie_output needs model.embed_dim == model.hidden_dim "
                f"(got {self.embed_dim} and {self.hidden_dim})")
        layers, heads = self.attention_layers(), self.attention_heads or 1
        if not -layers <= self.alignment_layer < layers:
            raise ValueError(f"model.alignment_layer: {self.alignment_layer} is not a decoder "
                             f"layer that attends (there are {layers}: 0..{layers - 1}, or "
                             f"-{layers}..-1 from the end)")
        if self.alignment_head is not None and not 0 <= self.alignment_head < heads:
            raise ValueError(f"model.alignment_head: {self.alignment_head} is not a head "
                             f"(there are {heads}: 0..{heads - 1}, or null for their mean)")
        if self.copy_attention and self.attention == "none":
            raise ValueError("model.copy_attention needs attention (it copies through the "
                             "attention weights); attention is 'none'")
        return self

    def _check_attention_options(self) -> None:
        """Each variant's options (from its registry entry) are required for it where their
        default is None, and refused for every other variant."""
        taken = variant_options(self.attention)
        for key, owners in all_variant_options().items():
            value, default = getattr(self, key), type(self).model_fields[key].default
            if key in taken and value is None:
                raise ValueError(f"model.{key} is required for attention: {self.attention}")
            if key not in taken and value != default:
                raise ValueError(f"model.{key} applies only to attention: {' / '.join(owners)} "
                                 f"(attention is {self.attention!r}); remove it")
        if self.attention_heads is not None and self.hidden_dim % self.attention_heads:
            raise ValueError(f"model.hidden_dim ({self.hidden_dim}) must be divisible by "
                             f"model.attention_heads ({self.attention_heads})")

    def max_source_positions(self) -> int | None:
        """The longest source (in subwords) the architecture can encode; None = no limit."""
        return None

    def output_input_dim(self) -> int:
        """The size of the vectors the output layer reads (``tie_output`` needs it to equal
        ``embed_dim``)."""
        return self.hidden_dim

    def attention_layers(self) -> int:
        """How many decoder layers attend (L of the attention the model returns)."""
        return 1
