"""``heedful serve``: trained models behind an HTTP API (FastAPI + uvicorn), with a web page
that shows attention as you translate.

Endpoints: ``POST /translate``, ``POST /transcribe`` (models trained on images: base64
image files in, text and attention over image regions out), ``GET /health``, ``GET /models``,
``GET /`` (the page), ``GET /docs`` and ``GET /openapi.json`` (FastAPI's; the docs page's
assets are vendored, so it works without a network).

Concurrency: each model has one worker thread (the model never runs on the event loop, and
never twice at once). With micro-batching on, requests that arrive within ``batch_wait_ms``
of each other (up to ``max_batch`` texts) and ask for the same decoding options are
translated as one batch, so throughput grows with concurrency; off, each request is
translated on its own.

Each model decodes on its translator's device in its precision (``heedful serve --device
cuda --precision bf16``; ``GET /models`` reports both).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from heedful.config import ConfigError
from heedful.decoding.options import DecodeOptions, optional_fields
from heedful.decoding.translator import Translation, Translator
from heedful.errors import UserError
from heedful.serving.common import (
    REQUEST_CAPS,
    Options,
    ServeError,
    ServeSettings,
    request_options,
)
from heedful.serving.limits import BodyLimit
from heedful.serving.transcribe import TranscribeRequest, TranscribeResponse, transcribe_request

ASSETS = Path(__file__).parent.parent / "assets"


class _RequestFields(BaseModel):
    """The body of ``POST /translate`` besides the decoding options."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(..., min_length=1, description="sentences to translate")
    model: str | None = Field(None, description="model name; may be omitted with one model")
    return_attention: bool = False
    constraints: list[list[str]] | None = Field(
        None, description="per text, target phrases its translation must contain (lexically "
                          "constrained beam search); [] for none")


if TYPE_CHECKING:
    TranslateRequest = _RequestFields
else:
    TranslateRequest = create_model(
        "TranslateRequest", __base__=_RequestFields, __doc__=(
            "The body of ``POST /translate``: the texts, and every decoding option, named as "
            "in the config and the CLI; an option left out takes the model's own ``decode`` "
            "config."),
        **optional_fields(REQUEST_CAPS))


class Hyp(BaseModel):
    translation: str
    score: float


class Attention(BaseModel):
    src_tokens: list[str]
    tgt_tokens: list[str]
    weights: list[list[list[list[float]]]] = Field(
        ..., description="(target tokens, layers, heads, source tokens)")


class TranslationOut(BaseModel):
    translation: str
    score: float
    n_best: list[Hyp]
    attention: Attention | None = None
    source_cut: int = Field(0, description="subwords cut from the end of an input longer than "
                                           "the model takes (0: none)")


class TranslateResponse(BaseModel):
    model: str
    translations: list[TranslationOut]
    seconds: float


# ----------------------------------------------------------------------------- batching

@dataclass
class _Job:
    texts: list[Any]
    """Source texts, or (a transcribing model) grayscale pages (H, W) uint8."""
    options: Options
    constraints: list[list[str]] | None
    future: asyncio.Future[list[Translation]] = field(repr=False)
    error: ServeError | None = None
    """Set when this job's own input failed inside a batch (the others' results stand)."""


class ModelWorker:
    """One model, one worker thread, and (optionally) a micro-batcher in front of it."""

    def __init__(self, name: str, translator: Translator, settings: ServeSettings) -> None:
        self.name, self.translator, self.settings = name, translator, settings
        self.source = translator.config.data.source
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"heedful-{name}")
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.batched_texts = 0

    def _translate(self, jobs: list[_Job]) -> list[Translation]:
        """The jobs' texts (they share options) as one batch; a problem with one job's input
        (a :class:`~heedful.errors.UserError`) fails that job only."""
        texts = [t for job in jobs for t in job.texts]
        wanted = None
        if any(job.constraints is not None for job in jobs):
            wanted = [c for job in jobs for c in (job.constraints or [[] for _ in job.texts])]
        try:
            return self.translator.translate(texts, constraints=wanted, **dict(jobs[0].options))
        except UserError as err:
            if len(jobs) == 1:
                raise ServeError(422, str(err)) from None
            return [r for job in jobs for r in self._alone(job)]

    def _alone(self, job: _Job) -> list[Translation]:
        try:
            return self._translate([job])
        except ServeError as err:
            job.error = err
            return [Translation("", 0.0) for _ in job.texts]

    async def translate(self, texts: list[Any], options: Options,
                        constraints: list[list[str]] | None = None) -> list[Translation]:
        loop = asyncio.get_running_loop()
        if not self.settings.micro_batching:
            self.batches += 1
            self.batched_texts += len(texts)
            job = _Job(texts, options, constraints, loop.create_future())
            return await loop.run_in_executor(self.executor, self._translate, [job])
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._batch_loop())
        job = _Job(texts, options, constraints, loop.create_future())
        await self.queue.put(job)
        return await job.future

    async def _batch_loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        wait = self.settings.batch_wait_ms / 1000
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0].texts)
            deadline = loop.time() + wait
            while count < self.settings.max_batch:
                try:
                    job = await asyncio.wait_for(self.queue.get(),
                                                 max(deadline - loop.time(), 0))
                except TimeoutError:
                    break
                jobs.append(job)
                count += len(job.texts)
            groups: dict[Options, list[_Job]] = defaultdict(list)
            for job in jobs:
                if not job.future.done():  # a timed-out request is not translated
                    groups[job.options].append(job)
            for members in groups.values():
                self.batches += 1
                self.batched_texts += sum(len(job.texts) for job in members)
                try:
                    results = await loop.run_in_executor(self.executor, self._translate, members)
                except Exception as err:  # handed to each waiting request
                    for job in members:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                start = 0
                for job in members:
                    part = results[start : start + len(job.texts)]
                    start += len(job.texts)
                    if job.future.done():
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    else:
                        job.future.set_result(part)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        cfg = self.translator.config
        m = cfg.model
        return {"name": self.name, "source": self.source, "arch": m.arch,
                "attention": m.attention,
                "layers": m.attention_layers(),
                "heads": m.attention_heads if m.attention == "multihead" else 1,
                "device": str(self.translator.device), "precision": self.translator.precision,
                "decode": cfg.decode.model_dump()}


# ----------------------------------------------------------------------------- the app


def _as_output(r: Translation, with_attention: bool) -> TranslationOut:
    attention = None
    if with_attention and r.attention is not None:
        attention = Attention(src_tokens=r.src_pieces, tgt_tokens=r.tgt_pieces,
                              weights=r.attention.float().round(decimals=4).tolist())
    return TranslationOut(translation=r.text, score=round(r.score, 4),
                          n_best=[Hyp(translation=t, score=round(s, 4)) for t, s in r.n_best],
                          attention=attention, source_cut=r.source_cut)


def create_app(models: dict[str, Translator], settings: ServeSettings | None = None) -> Any:
    """The FastAPI application serving ``models`` (name -> translator)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    if not models:
        raise ValueError("no models to serve")
    settings = settings or ServeSettings()
    workers = {name: ModelWorker(name, t, settings) for name, t in models.items()}
    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        for worker in workers.values():
            worker.close()

    app = FastAPI(title="heedful", version=_version(), docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  description="Sequence-to-sequence translation with attention you can see.")
    app.state.workers = workers
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")

    _add_error_handlers(app)
    _add_pages(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(workers),
                "micro_batching": settings.micro_batching,
                "batches": {n: w.batches for n, w in workers.items()},
                "texts": {n: w.batched_texts for n, w in workers.items()}}

    @app.get("/models")
    async def list_models() -> list[dict[str, Any]]:
        return [w.describe() for w in workers.values()]

    @app.post("/translate", response_model=TranslateResponse)
    async def translate(body: TranslateRequest) -> TranslateResponse:
        worker = _pick(workers, body.model)
        if worker.source != "text":  # never read a path a client names
            raise ServeError(422, f"model: {worker.name!r} reads {worker.source}s (POST "
                                  "/transcribe); translate needs a model trained on text")
        _check_limits(body, settings)
        opts, options = request_options(body, worker.translator)
        start = time.perf_counter()
        _check_constraints(body, opts)
        try:
            results = await asyncio.wait_for(worker.translate(body.texts, options,
                                                              body.constraints),
                                             settings.timeout_s)
        except TimeoutError:
            raise ServeError(504, f"the translation took longer than the request timeout "
                                  f"({settings.timeout_s:g} s)") from None
        return TranslateResponse(
            model=worker.name, seconds=round(time.perf_counter() - start, 4),
            translations=[_as_output(r, body.return_attention) for r in results])

    @app.post("/transcribe", response_model=TranscribeResponse)
    async def transcribe(body: TranscribeRequest) -> TranscribeResponse:
        return await transcribe_request(_pick(workers, body.model), body, settings)

    return app


def _add_error_handlers(app: Any) -> None:
    """Errors as ``{"detail": one readable line}`` with the right status."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, err: ServeError) -> JSONResponse:
        return JSONResponse({"detail": _printable(err.message)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # one readable line per problem, naming the field, beside FastAPI's own list (without
        # the inputs it echoes: they may be bytes, NaN or lone surrogates, which JSON lacks)
        problems, errors = [], []
        for e in err.errors():
            loc = [_printable(x) for x in e["loc"]]
            where = ".".join(str(x) for x in loc if x != "body") or "body"
            if e["type"] == "json_invalid":
                where = "body"
            problems.append(f"{where}: {_printable(e['msg'])}")
            errors.append({"type": e["type"], "loc": loc, "msg": _printable(e["msg"])})
        return JSONResponse({"detail": "; ".join(problems), "errors": errors},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        detail = err.detail
        if err.status_code == 400 and detail == "There was an error parsing the body":
            detail = "body: not JSON in UTF-8 (it could not be parsed)"  # FastAPI's words
        return JSONResponse({"detail": detail}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))


def _printable(value: Any) -> Any:
    """A string as JSON can carry it (lone surrogates escaped); other values as they are."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _add_pages(app: Any) -> None:
    """The web page that shows attention, and the API's own documentation page."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(ASSETS / "serve.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="heedful API",
                                   swagger_js_url="/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/assets/swagger-ui.css",
                                   swagger_favicon_url="/assets/favicon.svg")


def _pick(workers: dict[str, ModelWorker], name: str | None) -> ModelWorker:
    if name is None:
        if len(workers) == 1:
            return next(iter(workers.values()))
        raise ServeError(422, f"model: required when several models are served "
                              f"({', '.join(workers)})")
    if name not in workers:
        raise ServeError(404, f"model: no model named {name!r}; served: {', '.join(workers)}")
    return workers[name]


def _check_limits(body: TranslateRequest, settings: ServeSettings) -> None:
    phrases = [(f"constraints.{i}.{j}", p) for i, c in enumerate(body.constraints or [])
               for j, p in enumerate(c)]
    for where, text in [*((f"texts.{i}", t) for i, t in enumerate(body.texts)), *phrases]:
        try:  # JSON can escape what is not Unicode text
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ServeError(422, f"{where}: not valid Unicode (it holds a lone surrogate "
                                  "escape such as \\ud800)") from None
    if len(body.texts) > settings.max_texts:
        raise ServeError(413, f"texts: {len(body.texts)} texts in one request; the limit is "
                              f"{settings.max_texts}")
    for i, text in enumerate(body.texts):
        if len(text) > settings.max_chars:
            raise ServeError(413, f"texts.{i}: {len(text)} characters; the limit is "
                                  f"{settings.max_chars} per text")


def _check_constraints(body: TranslateRequest, opts: dict[str, Any]) -> None:
    """One list of phrases per text, and options that constrained search can honour."""
    if body.constraints is None:
        return
    from heedful.decoding.translator import check_constraints

    try:
        check_constraints(body.constraints, len(body.texts), DecodeOptions(**opts))
    except (UserError, ValueError) as err:
        raise ServeError(422, str(err).replace("line", "text")) from None
    if opts.get("split_sentences"):
        raise ServeError(422, "constraints: not with split_sentences")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("heedful")
    except PackageNotFoundError:
        return "0"


def parse_model_args(run_dir: str | None, named: list[str]) -> dict[str, str]:
    """``RUN_DIR`` and ``--model NAME=RUN_DIR`` options -> {name: run dir}."""

    models: dict[str, str] = {}
    if run_dir:
        models[Path(run_dir).name] = run_dir
    for item in named:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model {item!r}: expected NAME=RUN_DIR")
        if name in models:
            raise ConfigError(f"--model {item!r}: the name {name!r} is already used")
        models[name] = path
    if not models:
        raise ConfigError("nothing to serve: give a RUN_DIR or --model NAME=RUN_DIR")
    return models
