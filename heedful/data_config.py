"""The ``data`` section of a config: where the pairs come from, and the filters on them.

Split from :mod:`heedful.config` (which re-exports it) to keep each module to one job;
:class:`StrictSection` is the base of every section there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from heedful.audio.features import AudioConfig
from heedful.vision.augment import AugmentConfig


class StrictSection(BaseModel):
    """A config section: unknown keys are errors, values are checked and frozen, and each
    field's docstring is its documentation."""


    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              use_attribute_docstrings=True)


class SplitConfig(StrictSection):
    """One split of a user corpus: two line-aligned files, or one TSV/JSONL file."""

    src: str | None = None
    """format: text: the source-side file (plain or ``.gz``), one sentence a line."""
    tgt: str | None = None
    """format: text: the target-side file, line-aligned with ``src``."""
    path: str | None = None
    """format: tsv or jsonl: the one file holding both sides (plain or ``.gz``)."""
    split: str | None = None
    """format: hf only: the Hugging Face split name (default: train / dev / test)."""
    alignments: str | None = None
    """train only, format text or tsv (or a bundled dataset): word alignments of the training
    pairs in Pharaoh format (``i-j``: 0-based source word i, target word j; words split on
    whitespace), one line per input line (``heedful align-corpus`` writes one); what
    ``train.guided_alignment_weight`` supervises attention with."""


class DataConfig(StrictSection):
    """The ``data`` section: where the training, dev and test pairs come from, and the
    filters on training pairs."""

    dataset: str | None = "bible-es-en"
    """A bundled dataset by name; ``None`` to use ``train``/``dev``/``test`` below (or
    ``dir``)."""
    source: Literal["text", "image", "audio"] = "text"
    """What the model reads: ``text`` (source sentences), ``image`` or ``audio`` (image or WAV
    files listed in the manifests of ``dir``: :mod:`heedful.manifest`, read by
    :mod:`heedful.vision` or :mod:`heedful.audio`)."""
    dir: str | None = None
    """source: image or audio: the corpus folder holding the manifests ``train.tsv``,
    ``dev.tsv`` and ``test.tsv`` (each line: a file path relative to the folder, a tab, the
    target text)."""
    image_height: int = Field(32, ge=16, multiple_of=16)
    """source: image: every image is scaled to this height (the width follows its aspect
    ratio); a multiple of 16, the image encoder's vertical downsampling."""
    augment: AugmentConfig | None = None
    """source: image: random distortions of the training images (:mod:`heedful.vision.augment`)."""
    audio: AudioConfig | None = None
    """source: audio: how recordings become features, and SpecAugment
    (:mod:`heedful.audio.features`; None: its defaults)."""
    format: Literal["text", "tsv", "jsonl", "hf"] = "text"
    """How the ``train``/``dev``/``test`` splits are stored: two line-aligned text files, one
    TSV or JSONL file, or a Hugging Face dataset."""
    hf_dataset: str | None = None
    """format: hf: a Hugging Face dataset: a ``save_to_disk`` directory, data files, or a Hub
    name (needs network and ``pip install 'heedful[hf]'``)."""
    train: SplitConfig | None = None
    """The training split (required when ``dataset`` is ``None``)."""
    dev: SplitConfig | None = None
    """The dev split, validated on every ``train.valid_every`` updates; none: no validation
    (every checkpoint counts as the best)."""
    test: SplitConfig | None = None
    """The test split (``heedful evaluate --split test``)."""
    src_field: str = "src"
    """JSONL/HF key (dotted = nested, e.g. ``translation.de``) or TSV column index (as a
    string) of the source side."""
    tgt_field: str = "tgt"
    """Like ``src_field``, for the target side."""
    max_src_len: int | None = Field(200, gt=0)
    """Training pairs with more source subwords than this are dropped (counted)."""
    max_tgt_len: int | None = Field(200, gt=0)
    """Training pairs with more target subwords than this are dropped (counted)."""
    max_len_ratio: float | None = Field(None, gt=0)
    """Drop training pairs whose subword length ratio (either way) exceeds this."""
    train_limit: int | None = Field(None, gt=0)
    """Use only the first N training pairs (quick experiments, tests)."""
    dev_limit: int | None = Field(None, gt=0)
    """Validate on the first N dev pairs only (BLEU during training is the slow part)."""
