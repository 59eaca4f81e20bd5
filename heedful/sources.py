"""What a run reads, by ``data.source``: the reader of its inputs and its training-time
distortions.

Text runs read source sentences through the tokenizer; the other sources read files listed
in manifests (:mod:`heedful.manifest`) through a reader with one interface — ``read``,
``size``, ``collate``, ``batch``, ``array`` — :class:`heedful.vision.data.ImageReader` for
images, :class:`heedful.audio.data.AudioReader` for audio. The model side of the same choice
is :func:`heedful.config.frontend_of` and :func:`heedful.nn.architectures.build_model`.
"""

from __future__ import annotations

from heedful.audio.data import AudioReader, SpecAugmenter
from heedful.audio.features import AudioConfig
from heedful.batching import Augmenter
from heedful.config import Config
from heedful.vision.augment import ImageAugmenter
from heedful.vision.data import ImageReader

SourceReader = ImageReader | AudioReader


def audio_config(cfg: Config) -> AudioConfig:
    """The run's audio settings (``data.audio``, or the defaults)."""
    return cfg.data.audio or AudioConfig()


def reader_for(cfg: Config) -> SourceReader:
    """The reader of a non-text run's inputs."""
    if cfg.data.source == "image":
        return ImageReader(cfg.data.image_height)
    if cfg.data.source == "audio":
        return AudioReader(audio_config(cfg))
    raise ValueError(f"data.source: {cfg.data.source} is read by the tokenizer, not a reader")


def augmenter_for(cfg: Config) -> Augmenter | None:
    """The training-time distortions of a run's inputs, if any: image augmentation
    (``data.augment``) or SpecAugment (``data.audio.time_masks``/``freq_masks``)."""
    if cfg.data.source == "image" and cfg.data.augment and cfg.data.augment.active:
        return ImageAugmenter(cfg.data.augment)
    if cfg.data.source == "audio" and SpecAugmenter.wanted(audio_config(cfg)):
        return SpecAugmenter(audio_config(cfg))
    return None
