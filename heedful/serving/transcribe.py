"""``POST /transcribe``: models trained on images or audio, behind the same server (see
:mod:`heedful.serving.server`). Image files (``images``) or WAV files (``audio``) come
base64-encoded in JSON; each is decoded (and refused with a 413 or a 422 naming ``images.N``
or ``audio.N``) before it reaches the model's queue. With ``return_attention``, an audio
result also carries its log-mel spectrogram as a PNG, and the attention's boxes are that
picture's frame columns, so one page draws attention on images and on sound alike."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from heedful.decoding.options import optional_fields
from heedful.errors import UserError
from heedful.serving.common import REQUEST_CAPS, ServeError, ServeSettings, request_options


class _TranscribeFields(BaseModel):
    """The body of ``POST /transcribe`` besides the decoding options."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] | None = Field(None, min_length=1, description=(
        "image files (PNG, JPEG, ...), base64-encoded: for a model that reads images"))
    audio: list[str] | None = Field(None, min_length=1, description=(
        "WAV files, base64-encoded: for a model that listens to audio"))
    model: str | None = Field(None, description="model name; may be omitted with one model")
    return_attention: bool = False


if TYPE_CHECKING:
    TranscribeRequest = _TranscribeFields
else:
    TranscribeRequest = create_model(
        "TranscribeRequest", __base__=_TranscribeFields, __doc__=(
            "The body of ``POST /transcribe``: the images or the recordings, and every "
            "decoding option, named as in the config and the CLI."),
        **optional_fields(REQUEST_CAPS))


class TextHyp(BaseModel):
    text: str
    score: float


class ImageAttention(BaseModel):
    boxes: list[list[int]] = Field(..., description=(
        "each memory slot's (x0, y0, x1, y1) in the image's pixels (audio: in the "
        "spectrogram picture's, a column per frame)"))
    spans: list[list[float]] | None = Field(None, description=(
        "audio: each memory slot's (start, end) in seconds"))
    tgt_tokens: list[str]
    weights: list[list[list[list[float]]]] = Field(
        ..., description="(output tokens, layers, heads, slots)")


class TranscriptionOut(BaseModel):
    text: str
    score: float
    n_best: list[TextHyp]
    size: list[int] = Field(..., description=(
        "the image's (width, height); audio: the spectrogram's (frames, mel bands)"))
    seconds: float | None = Field(None, description="audio: the recording's duration")
    spectrogram: str | None = Field(None, description=(
        "audio with return_attention: the log-mel spectrogram as a base64 PNG, a pixel per "
        "frame and band, low bands at the bottom, dark where loud"))
    attention: ImageAttention | None = None


class TranscribeResponse(BaseModel):
    model: str
    transcriptions: list[TranscriptionOut]
    seconds: float


async def transcribe_request(worker: Any, body: TranscribeRequest, settings: ServeSettings
                             ) -> TranscribeResponse:
    """Decode the request's images or recordings, queue them on ``worker`` (a model that
    reads them) and shape the response."""
    if worker.source == "text":
        raise ServeError(422, f"model: {worker.name!r} translates text (POST /translate); "
                              "transcribe needs a model trained on images or audio")
    if (body.images is None) == (body.audio is None):
        raise ServeError(422, "images, audio: send one of them (base64 image files for a "
                              "model that reads images, base64 WAV files for one that listens)")
    if worker.source == "audio":
        if body.audio is None:
            raise ServeError(422, f"images: model {worker.name!r} listens to audio; send WAV "
                                  "files as audio")
        # decoding files is CPU work: off the event loop, which serves the other requests
        inputs = await asyncio.to_thread(decoded_audio, body.audio, settings,
                                         worker.translator.reader)
    else:
        if body.images is None:
            raise ServeError(422, f"audio: model {worker.name!r} reads images; send image "
                                  "files as images")
        inputs = await asyncio.to_thread(decoded_images, body.images, settings)
    _, options = request_options(body, worker.translator)
    start = time.perf_counter()
    try:
        results = await asyncio.wait_for(worker.translate(inputs, options), settings.timeout_s)
    except TimeoutError:
        raise ServeError(504, f"the transcription took longer than the request timeout "
                              f"({settings.timeout_s:g} s)") from None
    shape = as_listening if worker.source == "audio" else as_transcription
    return TranscribeResponse(
        model=worker.name, seconds=round(time.perf_counter() - start, 4),
        transcriptions=[shape(r, body.return_attention) for r in results])


def _base64_files(files: list[str], key: str, limit: int, max_files: int) -> list[bytes]:
    """The request's base64 files, decoded; 413 for too many or too large, 422 naming
    ``key.N`` for one that is not base64."""
    import base64
    import binascii

    if len(files) > max_files:
        raise ServeError(413, f"{key}: {len(files)} files in one request; the limit is "
                              f"{max_files}")
    raw = []
    for i, text in enumerate(files):
        if len(text) * 3 // 4 > limit:
            raise ServeError(413, f"{key}.{i}: about {len(text) * 3 // 4:,} bytes; the limit "
                                  f"is {limit:,} per file")
        try:
            raw.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ServeError(422, f"{key}.{i}: not valid base64") from None
    return raw


def decoded_audio(audio: list[str], settings: ServeSettings, reader: Any) -> list[Any]:
    """The request's base64 WAV files as samples at the model's rate (what the listener
    reads); 413 for too many or too large, 422 naming ``audio.N`` for one that is not a
    readable WAV file."""
    import io

    from heedful.audio.features import read_wav, resample

    recordings, seconds = [], 0.0
    for i, raw in enumerate(_base64_files(audio, "audio", settings.max_audio_bytes,
                                          settings.max_texts)):
        try:
            samples, rate = read_wav(io.BytesIO(raw), f"audio.{i}")
        except UserError as err:
            raise ServeError(422, str(err)) from None
        seconds += len(samples) / rate
        if seconds > settings.max_audio_seconds:
            raise ServeError(413, f"audio: more than {settings.max_audio_seconds:g} s of audio "
                                  f"in one request (at audio.{i}); send fewer or shorter files")
        try:
            recordings.append(resample(samples, rate, reader.cfg.sample_rate, f"audio.{i}"))
        except UserError as err:
            raise ServeError(422, str(err)) from None
    return recordings


def decoded_images(images: list[str], settings: ServeSettings) -> list[Any]:
    """The request's base64 images as grayscale pages (what the transcriber reads); 413 for
    too many or too large, 422 naming ``images.N`` for one that is not an image."""
    import io

    from heedful.vision.images import decode_image

    pages = []
    for i, raw in enumerate(_base64_files(images, "images", settings.max_image_bytes,
                                          settings.max_texts)):
        try:
            pages.append(decode_image(io.BytesIO(raw), f"images.{i}")[0])
        except UserError as err:
            raise ServeError(422, str(err)) from None
    return pages


def as_transcription(r: Any, with_attention: bool) -> TranscriptionOut:
    attention = None
    if with_attention and r.attention is not None and r.boxes is not None:
        attention = ImageAttention(boxes=r.boxes.tolist(), tgt_tokens=r.tgt_pieces,
                                   weights=r.attention.float().round(decimals=4).tolist())
    return TranscriptionOut(text=r.text, score=round(r.score, 4),
                            n_best=[TextHyp(text=t, score=round(s, 4)) for t, s in r.n_best],
                            size=list(r.size), attention=attention)


def as_listening(r: Any, with_attention: bool) -> TranscriptionOut:
    """A recording's transcription: ``size`` is its spectrogram's (frames, bands); with
    attention, the spectrogram as a PNG and each slot's frame columns and seconds."""
    from heedful.audio.encoder import AudioEncoder

    frames, bands = r.features.shape
    out = TranscriptionOut(text=r.text, score=round(r.score, 4),
                           n_best=[TextHyp(text=t, score=round(s, 4)) for t, s in r.n_best],
                           size=[frames, bands], seconds=round(r.duration, 4))
    if with_attention and r.attention is not None and r.spans is not None:
        out.spectrogram = spectrogram_png(r.features)
        out.attention = ImageAttention(
            boxes=AudioEncoder.slot_boxes_of(frames, bands).tolist(),
            spans=np.round(r.spans, 4).tolist(), tgt_tokens=r.tgt_pieces,
            weights=r.attention.float().round(decimals=4).tolist())
    return out


def spectrogram_png(features: Any) -> str:
    """The features' :func:`~heedful.audio.features.spectrogram_picture` as a base64 PNG."""
    import base64
    import io

    from PIL import Image

    from heedful.audio.features import spectrogram_picture

    buffer = io.BytesIO()
    Image.fromarray(spectrogram_picture(features), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
