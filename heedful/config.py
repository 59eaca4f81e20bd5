"""The one typed configuration object of heedful.

A config has five sections: ``data`` and ``train`` (declared here), ``tokenizer``
(:class:`heedful.tokenizer.TokenizerConfig`), ``model`` (the config class of the architecture
that ``model.arch`` names, see :mod:`heedful.nn.architectures`) and ``decode``
(:class:`heedful.decoding.options.DecodeOptions`); every option is declared once, with its
default, next to what it configures. A config is loaded from YAML (strictly: unknown keys and
wrong types are errors that name the key path), then ``key=value`` overrides from the command
line are applied; each section checks its own rules and :func:`_check_cross_fields` the rules
between sections. The effective config is written into every run directory.

"Off" is ``None``, never ``-1``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from heedful.audio.features import AudioConfig
from heedful.data_config import DataConfig, StrictSection
from heedful.data_config import SplitConfig as SplitConfig  # re-exported: part of the config API
from heedful.decoding.options import DecodeOptions
from heedful.errors import ConfigError
from heedful.nn.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    AnyModelConfig,
    Frontend,
    drop_other_architectures_defaults,
    owner_architectures,
)
from heedful.nn.rnn import RNNConfig
from heedful.tokenizer import TokenizerConfig
from heedful.yaml_problems import YAML_PROBLEMS, yaml_problem


class TrainConfig(StrictSection):
    """The ``train`` section: optimizer, learning-rate schedule, budgets, validation and
    checkpoints, logging, devices and precision."""

    seed: int = 1234
    """Seeds the initial weights, the batch order and dropout: the same seed and data, the
    same run."""
    batch_tokens: int = Field(4096, gt=0)
    """Tokens per batch, counted as sentences x the longest side, padding included."""
    accumulate: int = Field(1, gt=0)
    """Gradient accumulation: batches per optimizer update."""
    optimizer: Literal["adam", "nag"] = "adam"
    """``adam``, or ``nag``: SGD with Nesterov momentum, what Gehring et al. 2017 and
    fairseq's ``fconv`` recipes train ConvS2S with (lr 0.25, momentum 0.99, clip_norm 0.1)."""
    lr: float = Field(1e-3, gt=0)
    """The peak learning rate (``noam``: a factor on d_model^-0.5 x the warm-up curve)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's decay rates (optimizer: adam)."""
    momentum: float = Field(0.99, ge=0, lt=1)
    """Nesterov momentum (optimizer: nag)."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 weight decay, as the optimizer applies it."""
    schedule: Literal["constant", "noam", "inverse_sqrt", "plateau"] = "constant"
    """The learning-rate schedule: ``constant``, ``noam`` (Vaswani et al. 2017), ``inverse_sqrt``
    (decay with 1/sqrt(step) after the warm-up) or ``plateau`` (lower it when the dev score
    stops improving)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps (noam, inverse_sqrt and constant)."""
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    """schedule: plateau: the factor the learning rate is multiplied by."""
    plateau_patience: int = Field(2, ge=0)
    """schedule: plateau: validations without improvement before it is lowered."""
    min_lr: float = Field(1e-6, ge=0)
    """schedule: plateau: the learning rate is never lowered below this."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Mass spread over the vocabulary in the cross-entropy (0 = none); padding is ignored."""
    guided_alignment_weight: float | None = Field(None, gt=0)
    """Guided alignment (Garg et al. 2019; OpenNMT-py's ``lambda_align``): add this weight x
    the divergence of one attention head (``model.alignment_layer`` / ``alignment_head``)
    from the links of ``data.train.alignments`` mapped to subwords; None: off."""
    clip_norm: float | None = Field(5.0, gt=0)
    """Clip the gradient to this global L2 norm; ``None`` = no clipping."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer updates."""
    max_epochs: int | None = Field(None, gt=0)
    """Stop after this many passes over the training data."""
    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock training budget (validation included), counted over all sittings: a resumed
    run trains only for what its checkpoint has not yet spent."""
    valid_every: int = Field(500, gt=0)
    """Validate on the dev set and save a checkpoint every this many updates (and at the end)."""
    early_stopping_metric: Literal["bleu", "chrf", "loss", "cer"] = "bleu"
    """The dev figure that picks the best checkpoint and drives ``patience`` and the
    plateau schedule; ``cer`` (character error rate, lower is better) for non-text
    sources."""
    patience: int | None = Field(None, gt=0)
    """Stop after this many validations without improvement; ``None`` = never."""
    keep_last: int = Field(3, gt=0)
    """Checkpoints kept (the best one is kept besides)."""
    log_every: int = Field(50, gt=0)
    """Report the training loss, tokens/s, learning rate and gradient norm (to ``train.log``,
    ``metrics.jsonl`` and the progress bar) every this many updates."""
    tensorboard: bool = False
    """Also write TensorBoard event files to RUN_DIR/tensorboard/ (rank 0): the training loss,
    learning rate, tokens/s and gradient norm of every ``log_every`` window, every dev metric,
    and at each validation the attention heatmap of the first dev pair (needs
    ``pip install 'heedful[tensorboard]'``)."""
    threads: int | None = Field(None, gt=0)
    """torch intra-op threads; ``None`` = torch's default."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under
    torchrun each rank uses its LOCAL_RANK GPU; more ranks on a node than GPUs is an error."""
    tf32: bool = True
    """On CUDA, float32 matrix products in TensorFloat-32 (10-bit mantissa inputs, float32
    accumulation; what Ampere and later GPUs do fast). ``false`` keeps full float32."""
    deterministic: bool = False
    """Deterministic kernels only (``torch.use_deterministic_algorithms``; on CUDA also
    cuBLAS's fixed workspace): bit-exact resume and reruns on a GPU, some speed lost."""
    dist_timeout_minutes: float = Field(60.0, gt=0)
    """Under torchrun, how long a collective (all-reduce, barrier) may wait before the process
    group gives up (NCCL's own default is 10 minutes). Rank 0's long work (preparing the
    corpus, validating) does not count: the other ranks wait for it outside any collective."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Mixed precision (autocast) for training: bf16 on GPU or CPU, fp16 on GPU only (with
    loss scaling); weights and optimizer state stay float32. ``auto``: bf16 where the device
    computes in bf16 natively (a CPU with AVX512-BF16 or AMX, a GPU with bf16), else fp32;
    train.log says which."""

    @model_validator(mode="after")
    def _optimizer_options(self) -> TrainConfig:
        """Each optimizer's own option is refused for the other one (never silently unused)."""
        fields = type(self).model_fields
        for key, owner in (("betas", "adam"), ("momentum", "nag")):
            if self.optimizer != owner and getattr(self, key) != fields[key].default:
                raise ValueError(f"train.{key} applies only to train.optimizer: {owner} "
                                 f"(optimizer is {self.optimizer!r}); remove it")
        return self


class Config(StrictSection):
    name: str = "heedful"
    """The run's name; ``heedful train`` writes to ``runs/NAME`` unless ``--run-dir`` is given."""
    data: DataConfig = DataConfig()
    """Where the corpus comes from and how it is filtered."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """The SentencePiece subword model(s)."""
    model: AnyModelConfig = RNNConfig()
    """The architecture (``arch``) and its options."""
    train: TrainConfig = TrainConfig()
    """The optimizer, schedule, budgets, validation and checkpoints."""
    decode: DecodeOptions = DecodeOptions()
    """How the run's model decodes unless a command or request says otherwise."""

    @model_validator(mode="before")
    @classmethod
    def _read_0_1_model_section(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
            raw = {**raw, "model": drop_other_architectures_defaults(raw["model"])}
        return raw

    @model_validator(mode="after")
    def _cross(self) -> Config:
        _check_cross_fields(self)
        return self


def _check_cross_fields(cfg: Config) -> None:
    """The rules that tie sections together (each section checks its own)."""
    _check_source(cfg)
    if cfg.model.share_embeddings and not cfg.tokenizer.joint:
        raise ValueError("model.share_embeddings needs tokenizer.joint: true")
    d = cfg.data
    if d.dataset is None and d.source == "text":
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
    for split_name in ("dev", "test"):
        split = getattr(d, split_name)
        if split is not None and split.alignments is not None:
            raise ValueError(f"data.{split_name}.alignments: alignments are read for the "
                             "training split only (data.train.alignments)")
    t = cfg.train
    if t.guided_alignment_weight is not None:
        if d.train is None or d.train.alignments is None:
            raise ValueError("train.guided_alignment_weight needs data.train.alignments (word "
                             "alignments of the training pairs; heedful align-corpus writes "
                             "them)")
        if cfg.model.attention == "none":
            raise ValueError("train.guided_alignment_weight needs attention (model.attention "
                             "is none)")
        if cfg.tokenizer.sampling_alpha is not None:
            raise ValueError("train.guided_alignment_weight and tokenizer.sampling_alpha "
                             "cannot be combined: the links are mapped to the one best "
                             "segmentation, which sampling replaces")
    if d.train is not None and d.train.alignments is not None and d.dataset is None \
            and d.format not in ("text", "tsv"):
        raise ValueError(f"data.train.alignments works with format text or tsv (one links "
                         f"line per input line), not {d.format}")
    if t.schedule == "noam" and t.warmup_steps == 0:
        raise ValueError("train.schedule: noam needs train.warmup_steps > 0")


def _check_source(cfg: Config) -> None:
    """The rules of non-text sources: a manifest folder, an architecture with an image front
    end, and none of the options that only make sense for source text."""
    d, m = cfg.data, cfg.model
    channels_default = type(m).model_fields["image_channels"].default
    for key, is_set, source in (
            ("model.image_channels", m.image_channels != channels_default, "image"),
            ("model.image_position", m.image_position != "embeddings", "image"),
            ("data.augment", d.augment is not None, "image"),
            ("data.audio", d.audio is not None, "audio"),
            ("model.ctc_weight", m.ctc_weight is not None, "audio")):
        if is_set and d.source != source:
            raise ValueError(f"{key} applies only to data.source: {source}")
    if d.source == "text":
        if d.dir is not None:
            raise ValueError("data.dir applies only to data.source: image or audio (text "
                             "corpora are named by data.dataset or data.train/dev/test)")
        if cfg.train.early_stopping_metric == "cer":
            raise ValueError("train.early_stopping_metric: cer is computed for non-text "
                             "sources (data.source: image or audio); use bleu, chrf or loss")
        return
    if d.dir is None:
        raise ValueError(f"data.source: {d.source} needs data.dir (the folder with train.tsv, "
                         "dev.tsv and test.tsv)")
    if d.dataset is not None:
        raise ValueError(f"data.source: {d.source} reads data.dir; set data.dataset: null "
                         f"(it is {d.dataset!r})")
    named = [f"data.{s}" for s in ("train", "dev", "test") if getattr(d, s) is not None]
    if named:
        raise ValueError(f"data.source: {d.source} reads the manifests of data.dir; remove "
                         f"{', '.join(named)}")
    if m.arch not in ("rnn", "transformer"):
        raise ValueError(f"data.source: {d.source} needs model.arch rnn or transformer (the "
                         f"architectures with an image and audio encoder); got {m.arch!r}")
    for key in ("copy_attention", "share_embeddings"):
        if getattr(m, key):
            raise ValueError(f"model.{key} needs source text; data.source is {d.source}")
    if not cfg.tokenizer.joint:
        raise ValueError(f"data.source: {d.source} has no source text: keep tokenizer.joint: "
                         "true (one tokenizer, trained on the targets)")
    if cfg.train.guided_alignment_weight is not None:
        raise ValueError("train.guided_alignment_weight needs source text (word links); "
                         f"data.source is {d.source}")
    if cfg.tokenizer.sampling_alpha is not None:
        raise ValueError("tokenizer.sampling_alpha resegments source text; data.source is "
                         f"{d.source}")


def frontend_of(cfg: Config) -> Frontend | None:
    """What the run's model reads in front of its architecture (None: the source is text)."""
    if cfg.data.source == "image":
        return Frontend("image", cfg.data.image_height)
    if cfg.data.source == "audio":
        return Frontend("audio", (cfg.data.audio or AudioConfig()).n_mels)
    return None


# --------------------------------------------------------------------------- loading


def _section_class(path: list[str], arch: str | None) -> type[BaseModel] | None:
    """The config model at ``path`` (walking nested sections; ``model`` is the class that
    ``arch`` names)."""
    cls: type[BaseModel] = Config
    for part in path:
        if cls is Config and part == "model":
            entry = ARCHITECTURES.get(arch or DEFAULT_ARCH)
            if entry is None:
                return None
            cls = entry.config
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        subs = [a for a in (ann, *getattr(ann, "__args__", ()))  # unwrap Optional[Sub]
                if isinstance(a, type) and issubclass(a, BaseModel)]
        if not subs:
            return None
        cls = subs[0]
    return cls


def _unknown_key(loc: list[str], arch: str | None) -> str:
    key = ".".join(loc)
    if loc[:1] == ["model"] and len(loc) == 2 and (owners := owner_architectures(loc[1])):
        return f"{key} applies only to model.arch: {' / '.join(owners)}; remove it"
    cls = _section_class(loc[:-1], arch)
    valid = list(cls.model_fields) if cls is not None else []
    close = difflib.get_close_matches(loc[-1], valid, n=1)
    hint = f"; did you mean {'.'.join(loc[:-1] + close)!r}?" if close else ""
    return f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})"


def _format_error(err: ValidationError, source: str, arch: str | None) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if loc[:1] == ["model"] and len(loc) > 1 and loc[1] in ARCHITECTURES:
            loc = [loc[0], *loc[2:]]  # drop the union's tag: model.rnn.x -> model.x
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(_unknown_key(loc, arch))
        elif e["type"] == "value_error":
            message = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
            # a section's own rule (decode: n_best <= beam_size) says which section it is
            lines.append(message if not loc or message.startswith(key) else f"{key}: {message}")
        elif e["type"] == "missing" and loc[:1] == ["model"]:
            lines.append(f"{key} is required for model.arch: {arch}")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"{key}.arch: unknown architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}")
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
        model = raw.get("model")
        arch = str(model.get("arch", DEFAULT_ARCH)) if isinstance(model, dict) else None
        raise ConfigError(_format_error(err, source, arch)) from None


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
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: the key {key!r} is not a dotted key path "
                              "such as model.hidden_dim")
        try:
            value = yaml.safe_load(text) if text else None
        except YAML_PROBLEMS as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML "
                              f"({yaml_problem(err)})") from None
        parsed.append((key, value))
    return parsed


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Load a YAML config (or start from ``base`` / the defaults) and apply overrides."""
    raw: dict[str, Any] = {}
    user_keys: set[str] = set()  # model keys the YAML or an override sets
    if base is not None:
        raw = base.model_dump(mode="json", exclude_unset=True)
        # the model section's class is picked by arch, set or not
        raw["model"] = {**raw.get("model", {}), "arch": base.model.arch}
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
        except YAML_PROBLEMS as err:
            raise ConfigError(f"config file {path} is not valid YAML: "
                              f"{yaml_problem(err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
        raw = _deep_merge(raw, loaded)
        if isinstance(loaded.get("model"), dict):
            user_keys |= set(loaded["model"])
    for key, value in parse_overrides(overrides or []):
        _set_path(raw, key, value)
        if key.startswith("model."):
            user_keys.add(key.split(".")[1])
        elif key == "model" and isinstance(value, dict):  # model={arch: ..., ...}
            user_keys |= set(value)
    if overrides:
        source += " + overrides"
    if base is not None:
        _drop_keys_of_another_arch(raw, base, user_keys)
    return config_from_dict(raw, source)


def _drop_keys_of_another_arch(raw: dict[str, Any], base: Config, user_keys: set[str]) -> None:
    """``--preset speech-digits model.arch=transformer``: the preset's model keys that the
    new architecture has no use for (``rnn_type``) go; shared ones (``embed_dim``) stay, and
    keys the user set are kept, so a wrong one is still named."""
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("arch") in (None, base.model.arch):
        return
    entry = ARCHITECTURES.get(str(model["arch"]))
    if entry is None:
        return
    for key in list(model):
        if key not in entry.config.model_fields and key not in user_keys:
            del model[key]


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
