"""Decoding non-text sources: a :class:`~heedful.decoding.translator.Translator` whose inputs
are images (file paths, or arrays from the Python API) instead of source sentences.

Everything after the source is the translator's: the run's decoding options, greedy, beam
and sampling search, precision, devices, streaming in chunks, attention on request. What
differs is reading (:class:`~heedful.vision.data.ImageReader`), and that the source "pieces"
of a result are the image encoder's memory slots, named ``column,row`` and placed on the
image by :attr:`Transcription.boxes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heedful.audio.data import AudioReader
from heedful.audio.encoder import AudioEncoder
from heedful.config import Config
from heedful.decoding.options import DecodeOptions
from heedful.decoding.search import Hypothesis
from heedful.decoding.translator import SOURCE_DECODERS, Translation, Translator
from heedful.errors import ConfigError
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.sources import SourceReader, reader_for
from heedful.tokenizer import Tokenizer
from heedful.vision.data import ImageReader
from heedful.vision.images import HEIGHT_STRIDE, WIDTH_STRIDE

ImageInput = str | Path | np.ndarray
"""An image: a file path, or an array (H, W) / (H, W, 3|4), dark ink on light."""


@dataclass
class Transcription(Translation):
    """A :class:`Translation` of an image. ``boxes``: (S, 4) int, each memory slot's
    (x0, y0, x1, y1) in the input image's own pixels (what ``attention``'s last axis
    indexes); ``size``: the input's (width, height)."""

    boxes: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    spans: np.ndarray | None = None
    """Audio: (S, 2) float, each memory slot's (start, end) in seconds."""
    features: np.ndarray | None = None
    """Audio: the (frames, mel bands) normalised log-mel features the model read."""
    duration: float = 0.0
    """Audio: the seconds the features cover (frames x hop)."""


class Transcriber(Translator):
    """Images in, text out; see the module docstring. Build it with
    :meth:`Translator.from_checkpoint` on a run with ``data.source: image``."""

    def __init__(self, model: Seq2SeqModel, tokenizer: Tokenizer, config: Config,
                 max_positions: int | None = None, precision: str = "fp32") -> None:
        super().__init__(model, tokenizer, config, max_positions, precision)
        self.reader: SourceReader = reader_for(config)

    def transcribe(self, inputs: Sequence[ImageInput], return_attention: bool = False,
                   progress: bool = False, **decode_overrides: object) -> list[Transcription]:
        """One :class:`Transcription` per image (an empty path gives an empty one), in
        order; ``decode_overrides`` as for :meth:`Translator.translate`."""
        opts = self.decode_options(**decode_overrides)
        return self._transcribe(list(inputs), opts, return_attention, progress)

    def _translate(self, lines: list[str], numbers: list[int], opts: DecodeOptions,
                   return_attention: bool, progress: bool,
                   constraints: Sequence[Sequence[str]] | None) -> list[Translation]:
        """:meth:`Translator.translate` of image paths (what dev validation and the
        command line pass)."""
        if constraints is not None and any(constraints):
            raise ConfigError("constraints are target phrases of a translation; a "
                              "transcription takes none")
        results: list[Translation] = []
        results.extend(self._transcribe(list(lines), opts, return_attention, progress))
        return results

    def _transcribe(self, inputs: list[ImageInput], opts: DecodeOptions,
                    return_attention: bool, progress: bool) -> list[Transcription]:
        if opts.split_sentences:
            raise ConfigError("split_sentences splits source text; the source is images")
        wanted = [i for i, item in enumerate(inputs)
                  if isinstance(item, np.ndarray) or str(item).strip()]
        images = {i: self.reader.read(inputs[i] if isinstance(inputs[i], np.ndarray)
                                      else str(inputs[i]).strip()) for i in wanted}
        sizes = {i: self._input_size(inputs[i]) for i in wanted}
        order = sorted(wanted, key=lambda i: -self.reader.size(images[i]))
        generator = None
        if opts.sample:
            from heedful.decoding.sampling import make_generator

            generator = make_generator(opts.seed, self.device)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(order), unit="img", desc="transcribe", leave=False)
        results = [Transcription("", 0.0) for _ in inputs]
        for start in range(0, len(order), opts.batch_size):
            batch = order[start : start + opts.batch_size]
            src, mask = self.reader.collate([images[i] for i in batch])
            hyps = self._search(src, mask, opts, return_attention, generator)
            for i, nbest in zip(batch, hyps, strict=True):
                results[i] = self._to_transcription(images[i], sizes[i], nbest)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return results

    @staticmethod
    def _input_size(item: ImageInput) -> tuple[int, int]:
        return _input_size(item)

    def _to_transcription(self, image: np.ndarray, size: tuple[int, int],
                          nbest: list[Hypothesis]) -> Transcription:
        assert isinstance(self.reader, ImageReader)
        best, tok = nbest[0], self.tokenizer
        columns, rows = image.shape[1] // WIDTH_STRIDE, self.reader.rows
        col, row = np.divmod(np.arange(columns * rows), rows)
        scale = size[1] / self.reader.height  # normalised pixels -> the input's pixels
        boxes = np.stack([col * WIDTH_STRIDE, row * HEIGHT_STRIDE, (col + 1) * WIDTH_STRIDE,
                          (row + 1) * HEIGHT_STRIDE], axis=1) * scale
        boxes[:, 2] = np.minimum(boxes[:, 2], size[0])
        return Transcription(
            text=tok.decode_tgt(best.tokens), score=best.norm_score,
            n_best=[(tok.decode_tgt(h.tokens), h.norm_score) for h in nbest],
            src_pieces=[f"{c},{r}" for c, r in zip(col.tolist(), row.tolist(), strict=True)],
            tgt_pieces=tok.tgt_pieces(best.tokens),
            attention=None if best.attention is None else best.attention.cpu(),
            num_tokens=len(best.tokens), boxes=boxes.round().astype(np.int64), size=size)


def _input_size(item: ImageInput) -> tuple[int, int]:
    """The (width, height) of the input as given (before normalisation)."""
    if isinstance(item, np.ndarray):
        return int(item.shape[1]), int(item.shape[0])
    from PIL import Image

    with Image.open(str(item).strip()) as img:
        return img.size


class Listener(Transcriber):
    """Audio in, text out: a :class:`Transcriber` whose inputs are WAV paths or 1-D sample
    arrays at the run's rate, and whose results place each memory slot in time
    (:attr:`Transcription.spans`) instead of on a picture."""

    @staticmethod
    def _input_size(item: ImageInput) -> tuple[int, int]:
        return (0, 0)

    def _to_transcription(self, features: np.ndarray, size: tuple[int, int],
                          nbest: list[Hypothesis]) -> Transcription:
        assert isinstance(self.reader, AudioReader)
        best, tok = nbest[0], self.tokenizer
        frames = features.shape[0]
        spans = AudioEncoder.slot_spans_of(frames, self.reader.hop_seconds)
        return Transcription(
            text=tok.decode_tgt(best.tokens), score=best.norm_score,
            n_best=[(tok.decode_tgt(h.tokens), h.norm_score) for h in nbest],
            src_pieces=[f"{a:.2f}s" for a in spans[:, 0].tolist()],
            tgt_pieces=tok.tgt_pieces(best.tokens),
            attention=None if best.attention is None else best.attention.cpu(),
            num_tokens=len(best.tokens), spans=spans, features=features,
            duration=frames * self.reader.hop_seconds)


SOURCE_DECODERS["image"] = Transcriber
SOURCE_DECODERS["audio"] = Listener
