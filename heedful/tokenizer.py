"""SentencePiece subwords: training on the training split, loading from a run directory.

Special ids are fixed for every model heedful trains: pad 0, unk 1, bos 2, eos 3. Byte
fallback is on by default, so a character never seen in training becomes UTF-8 byte pieces
rather than a bare ``<unk>``. A joint tokenizer is stored as ``spm.model``; separate ones
as ``spm.src.model`` and ``spm.tgt.model`` — SentencePiece's own format, no pickle.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import sentencepiece as spm
from pydantic import BaseModel, ConfigDict, Field, model_validator

from heedful.errors import CheckpointError, ConfigError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class TokenizerConfig(BaseModel):
    """The ``tokenizer`` section: how the SentencePiece model(s) are trained."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              use_attribute_docstrings=True)

    type: Literal["unigram", "bpe", "char"] = "bpe"
    """The SentencePiece algorithm; ``char``: one piece per character (SentencePiece's char
    model; what image and speech targets use: a few dozen symbols, every output step one
    visible or audible character, so attention moves along the input with the output)."""
    vocab_size: int = Field(8000, ge=16)
    """Subwords per model, the special tokens included."""
    joint: bool = True
    """One SentencePiece model for both sides (``spm.model``) or one per side."""
    byte_fallback: bool = True
    """Unseen characters become UTF-8 byte pieces, never a bare ``<unk>``."""
    character_coverage: float = Field(1.0, gt=0, le=1)
    """The share of characters the model covers (SentencePiece's option of the same name)."""
    input_sentence_size: int = Field(200_000, gt=0)
    """SentencePiece trains on at most this many lines, drawn at random (seeded) from the
    training data."""
    user_symbols: list[str] = []
    """Pieces that are never split, e.g. the dialogue turn separator ``<sep>``."""
    sampling_alpha: float | None = Field(None, gt=0)
    """Subword regularization, off when null: training batches are segmented anew each time
    they are drawn (:mod:`heedful.subword_sampling`). Unigram: the smoothing of Kudo's
    sampling (0.1-0.5 are usual; smaller is more random); BPE: the dropout probability of
    each merge (BPE-dropout; 0.1 is usual, below 1). A training option: changing it does not
    retrain the tokenizer or rebuild the prepared store."""
    sampling_nbest: int = -1
    """Unigram only: sample from the ``sampling_nbest`` best segmentations, or from all of
    them (-1, forward-filtering backward-sampling)."""

    @model_validator(mode="after")
    def _sampling(self) -> TokenizerConfig:
        if self.sampling_alpha is None:
            return self
        if self.type == "char":
            raise ValueError("tokenizer.sampling_alpha: a char tokenizer has one segmentation "
                             "of every text; there is nothing to sample")
        if self.type == "bpe" and self.sampling_alpha >= 1:
            raise ValueError(f"tokenizer.sampling_alpha: {self.sampling_alpha} is BPE-dropout's "
                             "probability of dropping a merge; it must be below 1")
        if self.type == "unigram" and self.sampling_nbest in (0, 1):
            raise ValueError(f"tokenizer.sampling_nbest: {self.sampling_nbest} leaves one "
                             "segmentation to sample from; use -1 (all) or 2 and more")
        return self


# training-time options: not part of what a tokenizer is trained from
SAMPLING_FIELDS = frozenset({"sampling_alpha", "sampling_nbest"})


def sample_indices(num_lines: int, cfg: TokenizerConfig, seed: int) -> list[int] | None:
    """Which of ``num_lines`` non-empty lines SentencePiece trains on, in the order it reads
    them: ``None`` for all of them (in order), else ``cfg.input_sentence_size`` indices drawn
    with ``random.Random(seed)`` — the draw ``random.sample`` makes from a list of that many
    lines, so a corpus streamed past in chunks yields the sample of the corpus held whole."""
    if num_lines <= cfg.input_sentence_size:
        return None
    return random.Random(seed).sample(range(num_lines), cfg.input_sentence_size)


def _train_one(lines: Sequence[str], cfg: TokenizerConfig, seed: int) -> bytes:
    sample = [line for line in lines if line.strip()]
    picked = sample_indices(len(sample), cfg, seed)
    return _train_sample(sample if picked is None else [sample[i] for i in picked], cfg)


def _train_sample(sample: list[str], cfg: TokenizerConfig) -> bytes:
    """A SentencePiece model trained on exactly ``sample`` (non-empty lines)."""
    buffer = io.BytesIO()
    try:
        _run_trainer(sample, cfg, buffer)
    except RuntimeError as err:
        detail = str(err).split("] ")[-1]
        raise ConfigError(f"tokenizer.vocab_size ({cfg.vocab_size}) does not fit this corpus: "
                          f"{detail}") from None
    return buffer.getvalue()


def _run_trainer(sample: list[str], cfg: TokenizerConfig, buffer: io.BytesIO) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample),
        model_writer=buffer,
        model_type=cfg.type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        byte_fallback=cfg.byte_fallback,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        hard_vocab_limit=False,
        user_defined_symbols=list(cfg.user_symbols),
        # char targets (transcriptions) start with their first character, not a "▁"
        add_dummy_prefix=cfg.type != "char",
        num_threads=2,
        minloglevel=2,
    )


class Tokenizer:
    """Source and target SentencePiece processors (the same object when joint)."""

    def __init__(self, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor,
                 joint: bool) -> None:
        self.src, self.tgt, self.joint = src, tgt, joint

    # ---------------------------------------------------------------- construction
    @classmethod
    def train(cls, src_lines: Sequence[str], tgt_lines: Sequence[str], cfg: TokenizerConfig,
              out_dir: Path, seed: int = 0) -> Tokenizer:
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.joint:
            _write_atomic(out_dir / "spm.model", _train_one([*src_lines, *tgt_lines], cfg, seed))
        else:
            # target first: a crash in between leaves no spm.src.model, so resume retrains both
            _write_atomic(out_dir / "spm.tgt.model", _train_one(tgt_lines, cfg, seed))
            _write_atomic(out_dir / "spm.src.model", _train_one(src_lines, cfg, seed))
        return cls.load(out_dir)

    @classmethod
    def train_on_samples(cls, src_sample: list[str], tgt_sample: list[str] | None,
                         cfg: TokenizerConfig, out_dir: Path) -> Tokenizer:
        """Train on samples already drawn (see :func:`sample_indices`): the joint sample of
        both sides (``tgt_sample`` None) when ``cfg.joint``, else one sample per side."""
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.joint:
            _write_atomic(out_dir / "spm.model", _train_sample(src_sample, cfg))
        else:
            assert tgt_sample is not None
            _write_atomic(out_dir / "spm.tgt.model", _train_sample(tgt_sample, cfg))
            _write_atomic(out_dir / "spm.src.model", _train_sample(src_sample, cfg))
        return cls.load(out_dir)

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        joint_path = directory / "spm.model"
        if joint_path.exists():
            proc = _load_processor(joint_path)
            return cls(proc, proc, joint=True)
        src_path, tgt_path = directory / "spm.src.model", directory / "spm.tgt.model"
        if not (src_path.exists() and tgt_path.exists()):
            raise CheckpointError(
                f"{directory} has no SentencePiece model (spm.model, or spm.src.model and "
                "spm.tgt.model)")
        return cls(_load_processor(src_path), _load_processor(tgt_path), joint=False)

    @staticmethod
    def files(directory: Path) -> list[Path]:
        """The tokenizer files of a run directory ([] unless complete)."""
        joint = directory / "spm.model"
        if joint.exists():
            return [joint]
        pair = [directory / "spm.src.model", directory / "spm.tgt.model"]
        return pair if all(p.exists() for p in pair) else []

    # ---------------------------------------------------------------- use
    @property
    def src_vocab_size(self) -> int:
        return int(self.src.get_piece_size())

    @property
    def tgt_vocab_size(self) -> int:
        return int(self.tgt.get_piece_size())

    def src_to_tgt(self) -> list[int]:
        """For every source id, the target id of the same piece, or -1 where the target
        vocabulary lacks it (the copy mechanism's map; the identity when joint). The special
        ids (pad, unk, bos, eos) map to themselves."""
        if self.joint:
            return list(range(self.src_vocab_size))
        mapping = []
        for i in range(self.src_vocab_size):
            if i <= EOS_ID:
                mapping.append(i)
                continue
            j = int(self.tgt.piece_to_id(self.src.id_to_piece(i)))
            mapping.append(-1 if j == UNK_ID else j)
        return mapping

    def encode_src(self, lines: Sequence[str]) -> list[list[int]]:
        """Source ids, each sequence ending with EOS."""
        return [[*ids, EOS_ID] for ids in self.src.encode(list(lines))]

    def encode_tgt(self, lines: Sequence[str]) -> list[list[int]]:
        """Bare target ids (BOS/EOS are added by batching)."""
        return [list(ids) for ids in self.tgt.encode(list(lines))]

    def decode_tgt(self, ids: Sequence[int]) -> str:
        return str(self.tgt.decode([i for i in ids if i > EOS_ID]))

    def tgt_continues_word(self) -> list[bool]:
        """Per target id: whether the piece continues the word before it (no leading ``▁``,
        a letter or digit first); constrained search lets no such piece follow a phrase."""
        pieces = [str(self.tgt.id_to_piece(i)) for i in range(self.tgt_vocab_size)]
        return [i > EOS_ID and p[:1].isalnum() for i, p in enumerate(pieces)]

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._piece(self.src, i) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._piece(self.tgt, i) for i in ids]

    @staticmethod
    def _piece(proc: spm.SentencePieceProcessor, i: int) -> str:
        if i == EOS_ID:
            return "</s>"
        return str(proc.id_to_piece(i))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk: the user's problem, named by the file
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None


def _load_processor(path: Path) -> spm.SentencePieceProcessor:
    proc = spm.SentencePieceProcessor()
    try:
        proc.load(str(path))
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid SentencePiece model ({err})") from None
    return proc
