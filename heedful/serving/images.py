"""``POST /transcribe``: models trained on images, behind the same server (see
:mod:`heedful.serving.server`). Images come base64-encoded in JSON; each is decoded (and
refused with a 413 or a 422 naming ``images.N``) before it reaches the model's queue."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from heedful.decoding.options import optional_fields
from heedful.errors import UserError
from heedful.serving.common import REQUEST_CAPS, ServeError, ServeSettings, request_options


class _TranscribeFields(BaseModel):
    """The body of ``POST /transcribe`` besides the decoding options."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(..., min_length=1,
                              description="image files (PNG, JPEG, ...), base64-encoded")
    model: str | None = Field(None, description="model name; may be omitted with one model")
    return_attention: bool = False


if TYPE_CHECKING:
    TranscribeRequest = _TranscribeFields
else:
    TranscribeRequest = create_model(
        "TranscribeRequest", __base__=_TranscribeFields, __doc__=(
            "The body of ``POST /transcribe``: the images, and every decoding option, named "
            "as in the config and the CLI."),
        **optional_fields(REQUEST_CAPS))


class TextHyp(BaseModel):
    text: str
    score: float


class ImageAttention(BaseModel):
    boxes: list[list[int]] = Field(..., description="each memory slot's (x0, y0, x1, y1) in "
                                                    "the image's pixels")
    tgt_tokens: list[str]
    weights: list[list[list[list[float]]]] = Field(
        ..., description="(output tokens, layers, heads, slots)")


class TranscriptionOut(BaseModel):
    text: str
    score: float
    n_best: list[TextHyp]
    size: list[int] = Field(..., description="the image's (width, height)")
    attention: ImageAttention | None = None


class TranscribeResponse(BaseModel):
    model: str
    transcriptions: list[TranscriptionOut]
    seconds: float


async def transcribe_request(worker: Any, body: TranscribeRequest, settings: ServeSettings
                             ) -> TranscribeResponse:
    """Decode the request's images, queue them on ``worker`` (a model that reads images)
    and shape the response."""
    if worker.source == "text":
        raise ServeError(422, f"model: {worker.name!r} translates text (POST /translate); "
                              "transcribe needs a model trained on images")
    if worker.source == "audio":
        raise ServeError(422, f"model: {worker.name!r} listens to audio, which the server "
                              "does not take yet; transcribe WAV files with heedful transcribe")
    pages = decoded_images(body.images, settings)
    _, options = request_options(body, worker.translator)
    start = time.perf_counter()
    try:
        results = await asyncio.wait_for(worker.translate(pages, options), settings.timeout_s)
    except TimeoutError:
        raise ServeError(504, f"the transcription took longer than the request timeout "
                              f"({settings.timeout_s:g} s)") from None
    return TranscribeResponse(
        model=worker.name, seconds=round(time.perf_counter() - start, 4),
        transcriptions=[as_transcription(r, body.return_attention) for r in results])


def decoded_images(images: list[str], settings: ServeSettings) -> list[Any]:
    """The request's base64 images as grayscale pages (what the transcriber reads); 413 for
    too many or too large, 422 naming ``images.N`` for one that is not an image."""
    import base64
    import binascii
    import io

    from heedful.vision.images import decode_image

    if len(images) > settings.max_texts:
        raise ServeError(413, f"images: {len(images)} images in one request; the limit is "
                              f"{settings.max_texts}")
    pages = []
    for i, text in enumerate(images):
        if len(text) * 3 // 4 > settings.max_image_bytes:
            raise ServeError(413, f"images.{i}: about {len(text) * 3 // 4:,} bytes; the limit "
                                  f"is {settings.max_image_bytes:,} per image")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(422, f"images.{i}: not valid base64") from None
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
