"""The one typed configuration object of heedful.

Every option lives here, with its default, exactly once. A config is loaded from YAML
(strictly: unknown keys and wrong types are errors that name the key path), then
``key=value`` overrides from the command line are applied, then cross-field checks run in
:func:`_check_cross_fields`. The effective config is written into every run directory.

"Off" is ``None``, never ``-1``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heedful.decoding.options import DecodeOptions
from heedful.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


AttentionKind = Literal["none", "dot", "scaled_dot", "general", "additive", "multihead", "local",
                        "coverage"]
"""Allowed values of ``model.attention`` (see :mod:`heedful.nn.attention`)."""


class SplitConfig(_Strict):
    """One split of a user corpus: two line-aligned files, or one TSV/JSONL file."""

    src: str | None = None
    tgt: str | None = None
    path: str | None = None
    split: str | None = None
    """format: hf only: the Hugging Face split name (default: train / dev / test)."""


class DataConfig(_Strict):
    dataset: str | None = "bible-es-en"
    """A bundled dataset by name; ``None`` to use ``train``/``dev``/``test`` below."""
    format: Literal["text", "tsv", "jsonl", "hf"] = "text"
    hf_dataset: str | None = None
    """format: hf: a Hugging Face dataset: a ``save_to_disk`` directory, data files, or a Hub
    name (needs network and ``pip install 'heedful[hf]'``)."""
    train: SplitConfig | None = None
    dev: SplitConfig | None = None
    test: SplitConfig | None = None
    src_field: str = "src"
    """JSONL/HF key (dotted = nested, e.g. ``translation.de``) or TSV column index (as a
    string) of the source side."""
    tgt_field: str = "tgt"
    max_src_len: int | None = Field(200, gt=0)
    """Training pairs with more source subwords than this are dropped (counted)."""
    max_tgt_len: int | None = Field(200, gt=0)
    max_len_ratio: float | None = Field(None, gt=0)
    """Drop training pairs whose subword length ratio (either way) exceeds this."""
    train_limit: int | None = Field(None, gt=0)
    """Use only the first N training pairs (quick experiments, tests)."""
    dev_limit: int | None = Field(None, gt=0)
    """Validate on the first N dev pairs only (BLEU during training is the slow part)."""


class TokenizerConfig(_Strict):
    type: Literal["unigram", "bpe"] = "bpe"
    vocab_size: int = Field(8000, ge=16)
    joint: bool = True
    """One SentencePiece model for both sides (``spm.model``) or one per side."""
    byte_fallback: bool = True
    """Unseen characters become UTF-8 byte pieces, never a bare ``<unk>``."""
    character_coverage: float = Field(1.0, gt=0, le=1)
    input_sentence_size: int = Field(200_000, gt=0)
    user_symbols: list[str] = []
    """Pieces that are never split, e.g. the dialogue turn separator ``<sep>``."""


class ModelConfig(_Strict):
    arch: Literal["rnn", "transformer"] = "rnn"
    rnn_type: Literal["lstm", "gru"] = "lstm"
    embed_dim: int = Field(256, gt=0)
    hidden_dim: int = Field(512, gt=0)
    """Decoder hidden size; also the common size keys and values are projected to."""
    encoder_layers: int = Field(1, gt=0)
    decoder_layers: int = Field(1, gt=0)
    bidirectional: bool = True
    encoder_hidden_dim: int | None = Field(None, gt=0)
    """Encoder units per direction; ``None`` = hidden_dim / 2 if bidirectional else hidden_dim."""
    attention: AttentionKind = "scaled_dot"
    attention_heads: int | None = Field(None, gt=0)
    """Number of heads; required for ``attention: multihead``, unset otherwise."""
    local_window: int | None = Field(None, gt=0)
    """Window half-width D (the window is 2D + 1 positions); required for ``local`` only."""
    coverage_loss_weight: float | None = Field(None, ge=0)
    """Weight of the coverage loss (See et al. used 1.0); required for ``coverage`` only."""
    coverage_loss_from_step: int = Field(0, ge=0)
    """The coverage loss joins after this many updates (See et al. added it only for a short
    final phase: from the first step it keeps the model from learning to attend at all)."""
    copy_attention: bool = False
    """Pointer-generator copy mechanism (See et al. 2017; RNN only): mix the vocabulary
    distribution with the attention over source tokens, so source pieces, even ones the target
    vocabulary lacks, can be copied."""
    input_feeding: bool = True
    """Feed the attentional hidden state back as input (Luong 2015); off = faster."""
    attentional_tanh: bool = True
    """RNN: h~ = tanh(W_c [h; c]) (Luong 2015, Joey NMT) or, off, the linear W_c [h; c]
    (OpenNMT-py's ``mlp`` attention). With additive attention, input feeding and a constant
    learning rate without warm-up the tanh saturates within a few hundred updates (|h~| ~ 1
    everywhere, the loss stuck at the unigram level; measured) — off avoids that."""
    tie_output: bool = False
    """Tie the output layer to the target embeddings (needs embed_dim == hidden_dim)."""
    share_embeddings: bool = False
    """One embedding matrix for source and target (needs a joint tokenizer)."""
    dropout: float = Field(0.2, ge=0, lt=1)
    attention_dropout: float | None = Field(None, ge=0, lt=1)
    """Transformer only: dropout on the self-attention weights (``None`` = ``dropout``). 0
    lets PyTorch's fused flash kernel run on CPU (it has no dropout), so attention memory
    grows linearly, not quadratically, with length."""
    ff_dim: int | None = Field(None, gt=0)
    """Transformer only (required there): feed-forward size."""
    pre_norm: bool = True
    """Transformer only: layer norm before each sub-layer (pre-norm) or after (post-norm)."""
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    """Transformer only: position encodings."""
    max_positions: int = Field(2048, gt=0)
    """Transformer only: longest source or output, in subwords."""


class TrainConfig(_Strict):
    seed: int = 1234
    batch_tokens: int = Field(4096, gt=0)
    """Tokens per batch, counted as sentences x the longest side, padding included."""
    accumulate: int = Field(1, gt=0)
    """Gradient accumulation: batches per optimizer update."""
    optimizer: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "noam", "inverse_sqrt", "plateau"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps (noam, inverse_sqrt and constant)."""
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(2, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    clip_norm: float | None = Field(5.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    max_epochs: int | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock training budget (validation included), counted over all sittings: a resumed
    run trains only for what its checkpoint has not yet spent."""
    valid_every: int = Field(500, gt=0)
    early_stopping_metric: Literal["bleu", "chrf", "loss"] = "bleu"
    patience: int | None = Field(None, gt=0)
    """Stop after this many validations without improvement; ``None`` = never."""
    keep_last: int = Field(3, gt=0)
    log_every: int = Field(50, gt=0)
    threads: int | None = Field(None, gt=0)
    """torch intra-op threads; ``None`` = torch's default."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when available, else CPU. Under torchrun each rank uses its LOCAL_RANK
    GPU."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision (autocast) for training: bf16 on GPU or CPU, fp16 on GPU only (with
    loss scaling); weights and optimizer state stay float32."""


class Config(_Strict):
    name: str = "heedful"
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeOptions = DecodeOptions()

    @model_validator(mode="after")
    def _cross(self) -> Config:
        _check_cross_fields(self)
        return self


def _check_cross_fields(cfg: Config) -> None:
    m = cfg.model
    if m.tie_output and m.embed_dim != m.hidden_dim:
        raise ValueError(
            f"model.tie_output needs model.embed_dim == model.hidden_dim "
            f"(got {m.embed_dim} and {m.hidden_dim})"
        )
    if m.share_embeddings and not cfg.tokenizer.joint:
        raise ValueError("model.share_embeddings needs tokenizer.joint: true")
    if m.attention == "multihead":
        if m.attention_heads is None:
            raise ValueError("model.attention_heads is required for attention: multihead")
        if m.hidden_dim % m.attention_heads:
            raise ValueError(
                f"model.hidden_dim ({m.hidden_dim}) must be divisible by "
                f"model.attention_heads ({m.attention_heads})"
            )
    elif m.attention_heads is not None:
        raise ValueError(
            f"model.attention_heads applies only to attention: multihead "
            f"(attention is {m.attention!r}); remove it"
        )
    for kind, key in (("local", "local_window"), ("coverage", "coverage_loss_weight")):
        value = getattr(m, key)
        if m.attention == kind and value is None:
            raise ValueError(f"model.{key} is required for attention: {kind}")
        if m.attention != kind and value is not None:
            raise ValueError(f"model.{key} applies only to attention: {kind} "
                             f"(attention is {m.attention!r}); remove it")
    if m.copy_attention and m.arch != "rnn":
        raise ValueError("model.copy_attention (the pointer-generator) is implemented for "
                         "model.arch: rnn")
    if m.copy_attention and m.attention == "none":
        raise ValueError("model.copy_attention needs attention (it copies through the attention "
                         "weights); attention is 'none'")
    if m.coverage_loss_from_step and m.attention != "coverage":
        raise ValueError("model.coverage_loss_from_step applies only to attention: coverage")
    if m.arch == "transformer":
        if m.attention != "multihead":
            raise ValueError("model.arch: transformer needs model.attention: multihead "
                             f"(got {m.attention!r})")
        if m.ff_dim is None:
            raise ValueError("model.ff_dim is required for model.arch: transformer")
        if m.embed_dim != m.hidden_dim:
            raise ValueError("model.arch: transformer needs model.embed_dim == model.hidden_dim "
                             f"(got {m.embed_dim} and {m.hidden_dim})")
        if m.input_feeding:
            raise ValueError("model.input_feeding must be false for model.arch: transformer")
    elif m.ff_dim is not None:
        raise ValueError("model.ff_dim applies only to model.arch: transformer; remove it")
    elif m.attention_dropout is not None:
        raise ValueError("model.attention_dropout applies only to model.arch: transformer")
    if m.attention == "none" and m.input_feeding:
        raise ValueError(
            "model.input_feeding must be false with attention: none (input feeding passes "
            "the attentional state, which a model without attention does not have)"
        )
    if m.bidirectional and m.encoder_hidden_dim is None and m.hidden_dim % 2:
        raise ValueError(
            "model.hidden_dim must be even for a bidirectional encoder "
            "(or set model.encoder_hidden_dim)"
        )
    d = cfg.data
    if d.dataset is None:
        if d.train is None:
            raise ValueError("data.train is required when data.dataset is null")
        if (d.format == "hf") != (d.hf_dataset is not None):
            raise ValueError("data.format: hf and data.hf_dataset go together")
        for split_name in ("train", "dev", "test"):
            split = getattr(d, split_name)
            if split is None:
                continue
            if d.format == "text" and (split.src is None or split.tgt is None):
                raise ValueError(f"data.{split_name} needs src and tgt files for format: text")
            if d.format in ("tsv", "jsonl") and split.path is None:
                raise ValueError(f"data.{split_name} needs path for format: {d.format}")
    t = cfg.train
    if t.schedule == "noam" and t.warmup_steps == 0:
        raise ValueError("train.schedule: noam needs train.warmup_steps > 0")


# --------------------------------------------------------------------------- loading


def _model_fields(model: type[BaseModel], path: list[str]) -> list[str]:
    """Valid keys at ``path`` (walking nested config models)."""
    cls: Any = model
    for part in path:
        field = cls.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        # unwrap Optional[Sub]
        args = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif args:
            subs = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if not subs:
                return []
            cls = subs[0]
        else:
            return []
    return list(cls.model_fields)


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            valid = _model_fields(Config, loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            hint = f"; did you mean {'.'.join(loc[:-1] + close)!r}?" if close else ""
            lines.append(f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})")
        elif e["type"] == "value_error":
            lines.append(str(e["ctx"]["error"]) if "ctx" in e else e["msg"])
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config ({source}):\n  " + "\n  ".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict into a :class:`Config`, with readable errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config ({source}): the top level must be a mapping of keys")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["model.hidden_dim=256", ...]`` -> ``[("model.hidden_dim", 256), ...]`` (YAML values)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        parsed.append((key.strip(), value))
    return parsed


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Load a YAML config (or start from ``base`` / the defaults) and apply overrides."""
    raw: dict[str, Any] = base.model_dump(mode="json", exclude_unset=True) if base else {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not valid UTF-8 ({err.reason})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
        raw = _deep_merge(raw, loaded)
    for key, value in parse_overrides(overrides or []):
        _set_path(raw, key, value)
    if overrides:
        source += " + overrides"
    return config_from_dict(raw, source)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def save_config(cfg: Config, path: Path) -> None:
    """Write atomically (temporary name, fsync, rename): a crash never leaves half a config."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(config_to_yaml(cfg))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
