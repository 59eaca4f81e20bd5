"""What the server's endpoints share: its settings, its HTTP error, the request limits and
the decoding options of a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from heedful.config import ConfigError
from heedful.decoding.options import DECODE_OPTION_NAMES

Options = tuple[tuple[str, Any], ...]
"""A request's decoding options (and ``return_attention``), sorted: what the micro-batcher
groups requests by."""


@dataclass(frozen=True)
class ServeSettings:
    max_texts: int = 64
    """Texts per request (more -> 413)."""
    max_chars: int = 2000
    """Characters per text (more -> 413)."""
    max_image_bytes: int = 4_000_000
    """Bytes per image of ``POST /transcribe``, decoded (more -> 413)."""
    max_audio_bytes: int = 12_000_000
    """Bytes per WAV file of ``POST /transcribe``, decoded (more -> 413); under
    ``max_body_bytes``, whose base64 is a third larger."""
    max_audio_seconds: float = 600.0
    """Seconds of audio in one ``POST /transcribe`` request, all files together (more ->
    413): what bounds a request's decoding work, whatever the files' sample rates."""
    max_body_bytes: int = 16_000_000
    """Bytes per request body (more -> 413 before the body is read:
    :class:`heedful.serving.limits.BodyLimit`)."""
    timeout_s: float = 60.0
    """A request still waiting for its translations after this long gets a 504."""
    micro_batching: bool = True
    max_batch: int = 32
    """Most texts the micro-batcher puts into one model call."""
    batch_wait_ms: float = 5.0
    """How long the micro-batcher waits for more requests after the first."""


REQUEST_CAPS: dict[str, dict[str, Any]] = {"beam_size": {"le": 64}, "n_best": {"le": 64},
                                           "batch_size": {"le": 256}}
"""The server's own resource ceilings on top of the decoding options' constraints."""


class ServeError(Exception):
    """An HTTP error with a status and a message (rendered as JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def request_options(body: BaseModel, translator: Any) -> tuple[dict[str, Any], Options]:
    """The decoding options a request sets, checked by the model's own rules (e.g. n_best
    <= beam_size; a 422 naming the option), and the batching key with ``return_attention``."""
    opts = {k: v for k, v in body.model_dump(include=set(DECODE_OPTION_NAMES)).items()
            if v is not None}
    try:
        translator.decode_options(**opts)
    except ConfigError as err:
        raise ServeError(422, str(err)) from None
    attention = bool(getattr(body, "return_attention", False))
    return opts, tuple(sorted({**opts, "return_attention": attention}.items()))
