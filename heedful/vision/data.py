"""Image corpora for training: the manifests of ``data.dir`` read into memory.

What :func:`prepare_image_data` gives the trainer has the shape of a prepared text store
(:class:`~heedful.training.prepare.PreparedData`): the tokenizer (a SentencePiece model
trained on the training targets only — there is no source text), the training pairs as an
:class:`~heedful.batching.SourceArray` beside the target :class:`TokenArray`, and the dev
split as a :class:`~heedful.data.Corpus` whose sources are the image paths.

Image corpora are CPU-sized here (the digit strings: 20,000 images of 32 x ~200 pixels, about
130 MB as uint8), so they are decoded into memory at the start of training rather than
written into a memory-mapped store; a pair whose image has more memory slots than
``data.max_src_len`` or whose target has more pieces than ``data.max_tgt_len`` is dropped and
counted, as text pairs are.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heedful.batching import SourceArray, TokenArray
from heedful.config import Config
from heedful.data import Batch, Corpus, make_batch
from heedful.errors import DataError
from heedful.manifest import ManifestEntry, manifest_path, read_manifest
from heedful.tokenizer import Tokenizer, sample_indices
from heedful.vision.images import (
    HEIGHT_STRIDE,
    collate,
    encoder_columns,
    from_array,
    read_image,
)

log = logging.getLogger("heedful.train")


@dataclass
class ImageStore:
    """The training pairs in memory, with the attributes of a prepared text store that the
    trainer reads (no length order kept: the batch plan sorts; no links)."""

    src: SourceArray
    tgt: TokenArray
    manifest: dict[str, Any] = field(default_factory=dict)
    order: np.ndarray | None = None
    sizes: np.ndarray | None = None
    links: TokenArray | None = None

    def __len__(self) -> int:
        return len(self.src)

    def release_pages(self) -> None:
        """Nothing to release: the images are in memory, not mapped."""


class ImageReader:
    """Reads image inputs — file paths, or arrays from the Python API — into the model's
    normalised arrays, and pads them into batches."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.rows = height // HEIGHT_STRIDE

    def read(self, item: str | Path | np.ndarray, where: str | None = None) -> np.ndarray:
        """One input: a path (``where`` names its origin in errors) or an array."""
        if isinstance(item, np.ndarray):
            return from_array(item, self.height, where or "array")
        return read_image(item, self.height, where)

    def size(self, image: np.ndarray) -> int:
        """The image's memory slots (what batching counts)."""
        return encoder_columns(image.shape[1]) * self.rows

    def collate(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate(images)

    def array(self, images: list[np.ndarray]) -> SourceArray:
        """The images as the batch stream's training inputs."""
        sizes = np.fromiter((self.size(im) for im in images), dtype=np.int64,
                            count=len(images))
        return SourceArray(images, sizes, collate)

    def batch(self, images: Sequence[np.ndarray], targets: Sequence[Sequence[int]],
              pad_id: int, bos_id: int, eos_id: int) -> Batch:
        """A training/validation batch of images and their target ids."""
        text = make_batch([[eos_id]] * len(targets), targets, pad_id, bos_id, eos_id)
        src, mask = self.collate(images)
        return Batch(src, mask, text.tgt_in, text.tgt_out, text.tgt_mask, text.num_tgt_tokens)


def read_split(cfg: Config, split: str) -> list[ManifestEntry]:
    """The manifest entries of ``split`` of ``data.dir``."""
    assert cfg.data.dir is not None
    return read_manifest(manifest_path(cfg.data.dir, split))


def load_dev(cfg: Config) -> Corpus | None:
    """The dev split as a corpus of (image path, target text), or None without dev.tsv."""
    assert cfg.data.dir is not None
    path = manifest_path(cfg.data.dir, "dev")
    if not path.exists():
        return None
    entries = read_manifest(path)
    limit = cfg.data.dev_limit
    entries = entries[:limit] if limit else entries
    return Corpus([str(e.path) for e in entries], [e.target for e in entries], str(path))


def _tokenizer(cfg: Config, run_dir: Path, targets: list[str],
               tokenizer_from: Path | None) -> Tokenizer:
    """The run's tokenizer: kept once checkpoints depend on it, copied from
    ``tokenizer_from`` (``--init-from``), else trained on the training targets."""
    have = bool(Tokenizer.files(run_dir))
    ckpts = run_dir / "checkpoints"
    if have and ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir()):
        return Tokenizer.load(run_dir)
    if tokenizer_from is not None:
        for f in Tokenizer.files(run_dir):
            f.unlink()
        for f in Tokenizer.files(tokenizer_from):
            shutil.copy(f, run_dir / f.name)
        return Tokenizer.load(run_dir)
    tc = cfg.tokenizer
    lines = [t for t in targets if t.strip()]
    picked = sample_indices(len(lines), tc, cfg.train.seed)
    sample = lines if picked is None else [lines[i] for i in picked]
    log.info("training SentencePiece (%s, %d pieces) on %d training targets", tc.type,
             tc.vocab_size, len(sample))
    for f in Tokenizer.files(run_dir):  # separate ones must not shadow the joint one
        f.unlink()
    return Tokenizer.train_on_samples(sample, None, tc, run_dir)


def prepare_image_data(cfg: Config, run_dir: Path, reader: Any,
                       tokenizer_from: Path | None = None, keep_tokenizer: bool = False
                       ) -> tuple[Tokenizer, ImageStore, Corpus | None, int]:
    """The tokenizer, the training images and targets in memory (an :class:`ImageStore`),
    the dev corpus and the number of pairs dropped (what
    :func:`heedful.training.prepare.prepare_data` wraps). ``reader``: the source's reader
    (:func:`heedful.sources.reader_for`: images or audio, read the same way).
    ``keep_tokenizer``: load the run directory's as it is (a DDP rank after rank 0
    prepared). Errors name the manifest and line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    entries = read_split(cfg, "train")
    if cfg.data.train_limit:
        entries = entries[: cfg.data.train_limit]
    tok = (Tokenizer.load(run_dir) if keep_tokenizer
           else _tokenizer(cfg, run_dir, [e.target for e in entries], tokenizer_from))
    images = [reader.read(e.path, e.where) for e in entries]
    targets = tok.encode_tgt([e.target for e in entries])
    d = cfg.data
    keep = [i for i, (im, t) in enumerate(zip(images, targets, strict=True))
            if t and (d.max_src_len is None or reader.size(im) <= d.max_src_len)
            and (d.max_tgt_len is None or len(t) <= d.max_tgt_len)]
    if not keep:
        raise DataError(f"no training pairs left after length filtering "
                        f"({manifest_path(cfg.data.dir or '', 'train')}: data.max_src_len "
                        "counts an image's memory slots, data.max_tgt_len its target pieces)")
    src = reader.array([images[i] for i in keep])
    tgt = TokenArray.from_lists([targets[i] for i in keep])
    dropped = len(entries) - len(keep)
    counts = {"read": len(entries), "kept": len(keep), "dropped": dropped, "skipped": 0}
    log.info("read %d training %ss (%d dropped by the length filters) in %.1f s",
             len(entries), cfg.data.source, dropped, time.monotonic() - start)
    return tok, ImageStore(src, tgt, {"counts": counts}), load_dev(cfg), dropped
