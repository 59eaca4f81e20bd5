"""A few named presets, each a function returning a Config (``heedful train --preset NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heedful.config import Config, config_from_dict
from heedful.errors import UnknownNameError


def quickstart() -> Config:
    """What ``heedful quickstart`` trains: a small, fast scaled-dot RNN for a CPU budget (2.0M
    parameters).

    GRU, no input feeding (the decoder runs over whole sequences), a 4k joint vocabulary with
    shared embeddings and a tied output layer: chosen for tokens/s on 2 CPU cores (see
    docs/benchmarks.md for the measurement).
    """
    return config_from_dict({
        "name": "quickstart",
        "tokenizer": {"vocab_size": 4000},
        "model": {"rnn_type": "gru", "embed_dim": 256, "hidden_dim": 256,
                  "input_feeding": False, "share_embeddings": True, "tie_output": True,
                  "dropout": 0.1},
        "train": {"lr": 2e-3, "batch_tokens": 6000, "warmup_steps": 100, "valid_every": 200,
                  "log_every": 10, "keep_last": 2},
        "data": {"dev_limit": 300},
    }, "preset quickstart")


def rnn_scaled_dot() -> Config:
    """The default attention encoder-decoder: bi-LSTM 2x256, LSTM 512, scaled-dot attention,
    input feeding; joint 8k vocabulary (13.2M parameters)."""
    return config_from_dict({"name": "rnn-scaled-dot"}, "preset rnn-scaled-dot")


def rnn_additive() -> Config:
    """The peers' RNN (issue benchmark shape): bi-LSTM 2x128, LSTM 256, embeddings 128,
    additive (Bahdanau/MLP) attention, input feeding (5.5M parameters)."""
    return config_from_dict({
        "name": "rnn-additive",
        "model": {"embed_dim": 128, "hidden_dim": 256, "attention": "additive"},
    }, "preset rnn-additive")


def rnn_none() -> Config:
    """The no-attention baseline (Sutskever/Cho): the decoder sees only the final encoder
    state."""
    return config_from_dict({
        "name": "rnn-none",
        "model": {"attention": "none", "input_feeding": False},
    }, "preset rnn-none")


def peers_transformer() -> Config:
    """The peers' benchmark Transformer (``bench-transformer`` starts from it): pre-norm, 3+3
    layers, d_model 256, 4 heads, feed-forward 1024, shared and tied embeddings; Adam (0.9,
    0.98) with the noam schedule (warm-up 1000) as both peers configure it."""
    return config_from_dict({
        "name": "peers-transformer",
        "model": {"arch": "transformer", "attention": "multihead", "attention_heads": 4,
                  "embed_dim": 256, "hidden_dim": 256, "ff_dim": 1024, "encoder_layers": 3,
                  "decoder_layers": 3, "input_feeding": False, "share_embeddings": True,
                  "tie_output": True, "dropout": 0.1},
        "train": {"lr": 1.0, "betas": [0.9, 0.98], "schedule": "noam", "warmup_steps": 1000,
                  "clip_norm": None},
    }, "the peers' transformer")


def transformer_small() -> Config:
    """A small pre-norm Transformer for a CPU budget (3.66M parameters): 2+2 layers, d_model
    256, 4 heads, feed-forward 512, the quickstart's 4k joint vocabulary with shared and tied
    embeddings; Adam (0.9, 0.98) at 3e-3 after 100 warm-up updates, decaying as 1/sqrt(step);
    3,000-token batches. Chosen on dev learning curves at equal wall clock against the peers'
    3+3 x 1024 shape (``bench-transformer``), which makes about half as many updates per
    minute at the same batch size on a CPU (docs/cpu_budget.md)."""
    return config_from_dict({
        "name": "transformer-small",
        "tokenizer": {"vocab_size": 4000},
        "model": {"arch": "transformer", "attention": "multihead", "attention_heads": 4,
                  "embed_dim": 256, "hidden_dim": 256, "ff_dim": 512, "encoder_layers": 2,
                  "decoder_layers": 2, "input_feeding": False, "share_embeddings": True,
                  "tie_output": True, "dropout": 0.1},
        "train": {"lr": 3e-3, "betas": [0.9, 0.98], "schedule": "inverse_sqrt",
                  "warmup_steps": 100, "batch_tokens": 3000, "clip_norm": None,
                  "valid_every": 200, "log_every": 10, "keep_last": 2},
        "data": {"dev_limit": 300},
    }, "preset transformer-small")


def conv_small() -> Config:
    """A small ConvS2S (Gehring et al. 2017), fairseq's fconv_iwslt_de_en shape: embeddings
    256, encoder 4 x (256 channels, k = 3), decoder 3 x (256, k = 3) attending in every
    layer; the quickstart's 4k joint vocabulary with shared and tied embeddings (4.97M
    parameters); Adam as the quickstart's, which learns faster per update here than the
    paper's Nesterov SGD (docs/models.md). ``train.precision: auto``: bf16 on a CPU or GPU
    that computes in it natively, where it trains 1.8-1.9x as many tokens per second as float32
    and reached a higher BLEU in the same 15 minutes (docs/conv.md)."""
    return config_from_dict({
        "name": "conv-small",
        "tokenizer": {"vocab_size": 4000},
        "model": {"arch": "conv", "embed_dim": 256, "hidden_dim": 256, "encoder_layers": 4,
                  "decoder_layers": 3, "kernel_size": 3, "share_embeddings": True,
                  "tie_output": True, "dropout": 0.1},
        "train": {"lr": 2e-3, "batch_tokens": 6000, "warmup_steps": 100, "valid_every": 200,
                  "log_every": 10, "keep_last": 2, "precision": "auto"},
        "data": {"dev_limit": 300},
    }, "preset conv-small")


def _built_corpus(folder: str) -> dict[str, object]:
    """The data section for a corpus `heedful data` wrote into ``folder``."""
    return {"dataset": None,
            "train": {"src": f"{folder}/train.src.gz", "tgt": f"{folder}/train.tgt.gz"},
            "dev": {"src": f"{folder}/dev.src", "tgt": f"{folder}/dev.tgt"},
            "test": {"src": f"{folder}/test.src", "tgt": f"{folder}/test.tgt"}}


def summarize() -> Config:
    """Summarization (Debian package description -> synopsis): bi-GRU 2x128, GRU 256,
    coverage attention with the pointer-generator copy mechanism (See et al. 2017), coverage
    loss from step 1200, 1,000 warm-up steps; data from `heedful data debian-desc` in
    data/debian-desc-summ."""
    return config_from_dict({
        "name": "summarize",
        "data": {**_built_corpus("data/debian-desc-summ"),
                 "max_src_len": 400, "max_tgt_len": 64, "dev_limit": 300},
        "tokenizer": {"vocab_size": 8000},
        "model": {"rnn_type": "gru", "embed_dim": 128, "hidden_dim": 256,
                  "attention": "coverage", "coverage_loss_weight": 1.0,
                  "coverage_loss_from_step": 1200, "copy_attention": True,
                  "input_feeding": False, "share_embeddings": True, "dropout": 0.1},
        # the warm-up matters: without it the decoder of a model without copy saturates
        # (tanh at +-1) within ~100 updates and never leaves the unigram plateau
        "train": {"batch_tokens": 6000, "warmup_steps": 1000, "valid_every": 500,
                  "log_every": 50, "keep_last": 2},
        "decode": {"beam_size": 4, "max_len_a": 0.1, "max_len_b": 40},
    }, "preset summarize")


def dialogue() -> Config:
    """Dialogue (context -> response) on chatterbot-corpus from `heedful data chatterbot` in
    data/chatterbot: bi-GRU 2x128, GRU 256, dot attention, a 2k joint vocabulary with the
    turn separator <sep> as one piece; nucleus sampling (top-p 0.9, temperature 0.8) with
    no repeated trigrams."""
    return config_from_dict({
        "name": "dialogue",
        "data": _built_corpus("data/chatterbot"),
        "tokenizer": {"vocab_size": 2000, "user_symbols": ["<sep>"]},
        "model": {"rnn_type": "gru", "embed_dim": 128, "hidden_dim": 256, "attention": "dot",
                  "input_feeding": False, "share_embeddings": True, "dropout": 0.3},
        "train": {"batch_tokens": 3000, "valid_every": 100, "log_every": 20, "keep_last": 2,
                  "early_stopping_metric": "loss", "patience": 5},
        "decode": {"beam_size": 1, "sample": True, "top_p": 0.9, "temperature": 0.8,
                   "no_repeat_ngram_size": 3, "max_len_a": 1.0, "max_len_b": 30},
    }, "preset dialogue")


BENCH_CONFIGS = ("rnn", "transformer", "transformer-base")
"""The configurations ``heedful bench`` can measure (see :mod:`heedful.bench`); without
``--only`` it measures :data:`DEFAULT_BENCH`."""
DEFAULT_BENCH = ("rnn", "transformer")
"""The peers' two shapes; ``transformer-base`` (Vaswani et al.'s base shape) is for GPUs."""


def bench_config(name: str) -> Config:
    """The fixed benchmark configuration ``rnn`` or ``transformer`` (the peers' shapes, see
    :mod:`heedful.bench`, 4,096-token batches) or ``transformer-base`` (6+6 layers, d_model
    512, 8 heads, feed-forward 2048, 16,384-token batches); Adam at a constant 1e-3, label
    smoothing 0.1.

    Raises :class:`UnknownNameError` (a ``KeyError``) for any other name."""
    common = {"train": {"batch_tokens": 4096, "lr": 1e-3, "schedule": "constant",
                        "warmup_steps": 0, "label_smoothing": 0.1}}
    if name == "rnn":
        base = rnn_additive()
        # OpenNMT-py's mlp attention: a linear attentional state (see attentional_tanh)
        update: dict[str, Any] = {"model": {"dropout": 0.2, "attentional_tanh": False}, **common}
        update["train"] = {**common["train"], "clip_norm": 5.0}
    elif name == "transformer":
        base = peers_transformer()
        update = {"model": {"dropout": 0.1}, **common}
    elif name == "transformer-base":
        # Vaswani et al. 2017's base shape, 16k-token batches: a GPU-sized step
        base = peers_transformer()
        update = {"model": {"dropout": 0.1, "embed_dim": 512, "hidden_dim": 512,
                            "ff_dim": 2048, "attention_heads": 8, "encoder_layers": 6,
                            "decoder_layers": 6},
                  "train": {**common["train"], "batch_tokens": 16384}}
    else:
        raise UnknownNameError(f"unknown benchmark configuration {name!r}; choose from "
                               f"{', '.join(BENCH_CONFIGS)}")
    data = base.model_dump()
    for section, values in update.items():
        data[section] = {**data[section], **values}
    data["name"] = f"bench-{name}"
    return Config.model_validate(data)


def bench_rnn() -> Config:
    """`heedful bench`'s rnn configuration as the peers train it: rnn-additive with dropout
    0.2, Adam at a constant 1e-3, 4,096-token batches (train its decoding-benchmark model
    with this)."""
    return bench_config("rnn")


def bench_transformer() -> Config:
    """`heedful bench`'s transformer configuration as the peers train it: the peers' shape
    (:func:`peers_transformer`: 3+3 layers, ff 1024) with dropout 0.1, Adam at a constant
    1e-3, 4,096-token batches."""
    return bench_config("transformer")


def image_digits() -> Config:
    """Handwritten digit strings (`heedful data digits`, in data/digits; ``data.dir=DIR``
    for another folder): the image encoder (a 4-stage CNN with im2markup's row encoder, which
    read better than position embeddings: docs/benchmarks.md) under a bi-GRU 2x128 over its
    column-major slots, a GRU 256 decoder with scaled-dot attention; character targets (the
    ten digits: a char tokenizer without byte fallback); every training image distorted
    afresh each time it is drawn (the corpus has only 4,000 training digits); the learning
    rate halved when the dev CER stalls; the dev CER picks the best checkpoint."""
    return config_from_dict({
        "name": "image-digits",
        "data": {"dataset": None, "source": "image", "dir": "data/digits",
                 "image_height": 32, "max_src_len": 1000, "max_tgt_len": 64,
                 "dev_limit": 300,
                 "augment": {"rotate": 2, "shear": 0.25, "scale": 0.1, "shift": 2,
                             "warp": 1.0}},
        "tokenizer": {"type": "char", "vocab_size": 16, "byte_fallback": False},
        "model": {"rnn_type": "gru", "embed_dim": 128, "hidden_dim": 256,
                  "input_feeding": False, "dropout": 0.1, "image_position": "row_encoder"},
        "train": {"lr": 2e-3, "schedule": "plateau", "plateau_patience": 1,
                  "batch_tokens": 3000, "warmup_steps": 100, "valid_every": 200,
                  "log_every": 10, "keep_last": 2, "early_stopping_metric": "cer"},
        # outputs capped at a character per 4 pixel columns (+4): far above a digit's width
        "decode": {"beam_size": 1, "max_len_a": 0.25, "max_len_b": 4},
    }, "preset image-digits")


def ocr_lines() -> Config:
    """Printed and handwriting-style text lines (`heedful data text-lines`, in
    data/text-lines): image-digits' model with room for ~70 characters (letters of both cases,
    digits, punctuation) and lines of up to 40 of them; the dev CER picks the best
    checkpoint."""
    cfg = image_digits().model_dump(mode="json")
    cfg["name"] = "ocr-lines"
    # measured as it was before image-digits took up augmentation and the plateau schedule
    cfg["data"].update({"dir": "data/text-lines", "dev_limit": 500, "augment": None})
    cfg["model"].update({"image_position": "embeddings"})
    cfg["tokenizer"].update({"vocab_size": 128})
    cfg["train"].update({"batch_tokens": 6000, "valid_every": 250, "schedule": "constant"})
    return config_from_dict(cfg, "preset ocr-lines")


def speech_digits() -> Config:
    """Spoken digit strings (`heedful data spoken-digits`, in data/spoken-digits): 40 log-mel
    bands at 8 kHz, the audio encoder's 4x subsampling under a bi-GRU 2x128, a GRU 256
    decoder with scaled-dot attention, character targets (the digits and the word boundary);
    SpecAugment's masks narrower than a digit; the dev CER picks the best checkpoint."""
    return config_from_dict({
        "name": "speech-digits",
        "data": {"dataset": None, "source": "audio", "dir": "data/spoken-digits",
                 "max_src_len": 1000, "max_tgt_len": 64, "dev_limit": 200,
                 "audio": {"sample_rate": 8000, "n_mels": 40, "time_masks": 2,
                           "time_mask_frames": 10, "freq_masks": 2, "freq_mask_bands": 6}},
        "tokenizer": {"type": "char", "vocab_size": 16, "byte_fallback": False},
        "model": {"rnn_type": "gru", "embed_dim": 128, "hidden_dim": 256,
                  "input_feeding": False, "dropout": 0.1},
        "train": {"lr": 2e-3, "schedule": "plateau", "plateau_patience": 1,
                  "batch_tokens": 3000, "warmup_steps": 100, "valid_every": 200,
                  "log_every": 10, "keep_last": 2, "early_stopping_metric": "cer"},
        # a digit and its space take ~12 memory slots (0.5 s); outputs capped far above that
        "decode": {"beam_size": 1, "max_len_a": 0.5, "max_len_b": 4},
    }, "preset speech-digits")


def speech_sentences() -> Config:
    """Spoken verses (`heedful data spoken-sentences`, in data/spoken-sentences): 80 log-mel
    bands at 16 kHz, SpecAugment and speed/vocal-tract perturbation (the test voices are
    never heard), the audio encoder under a bi-GRU 2x128, a GRU 256 decoder with scaled-dot
    attention, character targets; the dev CER picks the best checkpoint."""
    return config_from_dict({
        "name": "speech-sentences",
        "data": {"dataset": None, "source": "audio", "dir": "data/spoken-sentences",
                 "max_src_len": 1000, "max_tgt_len": 400, "dev_limit": 100,
                 "audio": {"sample_rate": 16000, "n_mels": 80, "time_masks": 2,
                           "time_mask_frames": 10, "freq_masks": 2, "freq_mask_bands": 10,
                           "speed_perturb": 0.1, "vtlp": 0.1}},
        "tokenizer": {"type": "char", "vocab_size": 48, "byte_fallback": False},
        "model": {"rnn_type": "gru", "embed_dim": 128, "hidden_dim": 256,
                  "input_feeding": False, "dropout": 0.1},
        "train": {"lr": 2e-3, "schedule": "plateau", "plateau_patience": 1,
                  "batch_tokens": 6000, "warmup_steps": 200, "valid_every": 200,
                  "log_every": 10, "keep_last": 2, "early_stopping_metric": "cer"},
        # a character takes ~2 memory slots (80 ms); outputs capped above that
        "decode": {"beam_size": 1, "max_len_a": 1.0, "max_len_b": 10},
    }, "preset speech-sentences")


PRESETS: dict[str, Callable[[], Config]] = {
    "quickstart": quickstart,
    "rnn-scaled-dot": rnn_scaled_dot,
    "rnn-additive": rnn_additive,
    "rnn-none": rnn_none,
    "transformer-small": transformer_small,
    "conv-small": conv_small,
    "summarize": summarize,
    "dialogue": dialogue,
    "image-digits": image_digits,
    "ocr-lines": ocr_lines,
    "speech-digits": speech_digits,
    "speech-sentences": speech_sentences,
    "bench-rnn": bench_rnn,
    "bench-transformer": bench_transformer,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
