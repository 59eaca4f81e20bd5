"""The training data, ready for the batch stream: the tokenizer, the encoded and
length-filtered training pairs, and the dev corpus."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from heedful.config import Config, DataConfig
from heedful.data import Corpus, load_split
from heedful.errors import DataError
from heedful.tokenizer import Tokenizer

log = logging.getLogger("heedful.train")


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns."""

    tokenizer: Tokenizer
    train_src: list[list[int]]
    """Encoded source sides of the kept training pairs (each ends with EOS)."""
    train_tgt: list[list[int]]
    """Encoded target sides, bare (BOS/EOS are added per batch)."""
    dev: Corpus | None
    """The dev corpus as text (None when the config names no dev split)."""
    filtered: int
    """Training pairs dropped: length filters, empty sides, blank JSONL lines."""


def prepare_data(cfg: Config, run_dir: Path, tokenizer_from: Path | None = None
                 ) -> PreparedData:
    """Read the corpus, train (or reuse) the tokenizer, encode and length-filter train.

    The tokenizer is ``run_dir``'s own if it has one (a resumed run), else a copy of
    ``tokenizer_from``'s (``--init-from``), else trained on the training pairs and saved into
    ``run_dir``. Raises :class:`DataError` when no training pair survives the filters.
    """
    train = load_split(cfg.data, "train")
    assert train is not None  # the config requires a train split
    dev = load_split(cfg.data, "dev")
    if Tokenizer.files(run_dir):
        tokenizer = Tokenizer.load(run_dir)
    elif tokenizer_from is not None:
        for f in Tokenizer.files(tokenizer_from):
            shutil.copy(f, run_dir / f.name)
        tokenizer = Tokenizer.load(run_dir)
    else:
        log.info("training SentencePiece (%s, %d pieces, %s) on %d pairs", cfg.tokenizer.type,
                 cfg.tokenizer.vocab_size, "joint" if cfg.tokenizer.joint else "separate",
                 len(train))
        tokenizer = Tokenizer.train(train.src, train.tgt, cfg.tokenizer, run_dir, cfg.train.seed)
    src = tokenizer.encode_src(train.src)
    tgt = tokenizer.encode_tgt(train.tgt)
    keep = [i for i, (s, t) in enumerate(zip(src, tgt, strict=True)) if _fits(s, t, cfg.data)]
    filtered = len(src) - len(keep) + train.skipped
    if not keep:
        raise DataError(f"no training pairs left after length filtering ({train.origin})")
    return PreparedData(tokenizer, [src[i] for i in keep], [tgt[i] for i in keep], dev, filtered)


def _fits(src: list[int], tgt: list[int], d: DataConfig) -> bool:
    """Whether an encoded pair passes the data section's length filters."""
    if len(src) <= 1 or not tgt:
        return False  # an empty side (the source's one piece is EOS) teaches nothing
    if d.max_src_len is not None and len(src) > d.max_src_len:
        return False
    if d.max_tgt_len is not None and len(tgt) > d.max_tgt_len:
        return False
    return d.max_len_ratio is None or max(len(src) / len(tgt),
                                          len(tgt) / len(src)) <= d.max_len_ratio
