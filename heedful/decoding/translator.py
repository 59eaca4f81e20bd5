"""Checkpoint -> tokenize -> decode -> detokenize. Used by the CLI, training and the server.

Long inputs are sorted by length, batched, decoded and written back in input order; every
input line gives exactly one output (an empty input gives an empty output). An input of any
length streams through :meth:`Translator.translate_stream` in chunks of ``STREAM_CHUNK``
lines, in constant memory.

The model and every tensor decoding creates live on one device (``from_checkpoint(...,
device=...)``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, see :mod:`heedful.runtime.device`);
``precision`` ``bf16``/``fp16`` decodes under autocast (log-probabilities and scores stay
float32).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import Tensor

from heedful.checkpoint import CheckpointError, find_checkpoint, load_model_weights
from heedful.config import Config, ConfigError, load_config
from heedful.data import pad
from heedful.decoding.options import DecodeOptions
from heedful.decoding.search import Hypothesis, beam_search, greedy_search, max_lengths
from heedful.nn.architectures import build_model
from heedful.nn.pointer_generator import extend_source, extended_pieces, extended_text
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.device import resolve_device
from heedful.runtime.gemm import as_plain_linear
from heedful.runtime.precision import autocast_dtype, check_precision
from heedful.tokenizer import PAD_ID, Tokenizer

SHIPPED_MODELS_DIR = Path(__file__).parent.parent / "pretrained"
MAX_SOURCE_PIECES = 1024
"""Longer inputs are cut to this many subwords (documented; never a crash)."""
MAX_OUTPUT_PIECES = 2048
"""The longest output of a model without a position limit of its own (the RNN)."""
STREAM_CHUNK = 10_000
"""Lines that :meth:`Translator.translate_stream` sorts and decodes together."""


def resolve_run_dir(path_or_name: str | Path) -> Path:
    """An existing path wins; otherwise the name of a model shipped with the package."""
    path = Path(path_or_name)
    if path.exists():
        return path
    shipped = SHIPPED_MODELS_DIR / str(path_or_name)
    if shipped.is_dir() and (shipped / "config.yaml").exists():
        return shipped
    available = sorted(p.name for p in SHIPPED_MODELS_DIR.glob("*") if (p / "config.yaml").exists())
    raise CheckpointError(
        f"{path_or_name} is neither a run directory nor a shipped model "
        f"(shipped models: {', '.join(available) or 'none'})")


def _cap_source(ids: list[int], limit: int) -> list[int]:
    """Cut an over-long source (ending with EOS) to ``limit`` pieces, keeping the EOS."""
    return ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]


@dataclass
class Translation:
    """One input's result. ``attention``: (T_out, L, H, S) over subwords, when requested."""

    text: str
    score: float
    n_best: list[tuple[str, float]] = field(default_factory=list)
    src_pieces: list[str] = field(default_factory=list)
    tgt_pieces: list[str] = field(default_factory=list)
    attention: Tensor | None = None
    num_tokens: int = 0


class Translator:
    def __init__(self, model: Seq2SeqModel, tokenizer: Tokenizer, config: Config,
                 max_positions: int | None = None, precision: str = "fp32") -> None:
        """``max_positions``: the longest source or output the model takes, in subwords
        (default: what the config's architecture allows; None = no limit). The model decodes
        on the device its parameters are on, in ``precision`` (fp32, or bf16/fp16 autocast;
        checked against that device)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.max_positions = (max_positions if max_positions is not None
                              else config.model.max_source_positions())
        check_precision(precision, self.device)
        self.precision = precision

    @classmethod
    def from_checkpoint(cls, path_or_name: str | Path, which: str = "best",
                        device: str | torch.device = "cpu", precision: str = "fp32"
                        ) -> Translator:
        """The run's model (``which`` checkpoint) on ``device`` (a torch.device, or a name
        that :func:`~heedful.runtime.device.resolve_device` resolves: ``auto`` is the GPU
        where there is one), decoding in ``precision``. A device this machine lacks or a
        precision it cannot run is a one-line :class:`~heedful.errors.UserError` before
        anything is loaded."""
        target = resolve_device(device) if isinstance(device, str) else device
        check_precision(precision, target)
        run_dir = resolve_run_dir(path_or_name)
        if not (run_dir / "config.yaml").exists():
            raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
        config = load_config(run_dir / "config.yaml")
        ckpt = find_checkpoint(run_dir, which)
        tokenizer = Tokenizer.load(run_dir)
        model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
        load_model_weights(model, ckpt)  # read into the CPU model: a GPU-saved run loads anywhere
        return cls(model.to(target), tokenizer, config, precision=precision)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], which: str = "best",
                         device: str | torch.device = "cpu", precision: str = "fp32"
                         ) -> Translator:
        """One model, or an ensemble of several (see :mod:`heedful.decoding.ensemble`); the first
        model's config (decoding options, limits) and tokenizer are used."""
        if len(paths) == 1:
            return cls.from_checkpoint(paths[0], which, device, precision)
        from heedful.decoding.ensemble import Ensemble
        from heedful.tokenizer import Tokenizer

        translators = [cls.from_checkpoint(p, which, device, precision) for p in paths]
        first_dir = resolve_run_dir(paths[0])
        reference = [f.read_bytes() for f in Tokenizer.files(first_dir)]
        for p in paths[1:]:
            if [f.read_bytes() for f in Tokenizer.files(resolve_run_dir(p))] != reference:
                raise CheckpointError(
                    f"cannot ensemble {p} with {paths[0]}: their tokenizers differ (ensemble "
                    "members must share the SentencePiece model)")
        ensemble = Ensemble([t.model for t in translators])
        first = translators[0]
        limits = [t.max_positions for t in translators if t.max_positions is not None]
        return cls(ensemble, first.tokenizer, first.config, min(limits) if limits else None,
                   precision)

    def quantize(self, kind: str = "int8") -> Translator:
        """Dynamic int8 quantization for CPU inference: the weights of every Linear, LSTM and
        GRU are stored in int8 and activations are quantized on the fly (fbgemm/onednn
        kernels). Smaller and usually faster on CPU; docs/benchmarks.md gives the BLEU it costs."""
        if kind != "int8":
            raise ConfigError(f"unknown quantization {kind!r}; supported: int8")
        if self.device.type != "cpu":
            raise ConfigError("int8 dynamic quantization runs on CPU only")
        import warnings

        with warnings.catch_warnings():  # torch deprecates the quantized tensor API (still there)
            warnings.simplefilter("ignore")
            # quantize_dynamic matches exact classes: heedful's Linear is an nn.Linear to it
            self.model = torch.ao.quantization.quantize_dynamic(
                as_plain_linear(self.model), {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU},
                dtype=torch.qint8)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode_options(self, **overrides: object) -> DecodeOptions:
        """The run's decode config with non-None overrides applied (validated)."""
        updates = {k: v for k, v in overrides.items() if v is not None}
        try:
            return DecodeOptions.model_validate({**self.config.decode.model_dump(), **updates})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'decode'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in err.errors())
            raise ConfigError(f"invalid decoding options: {problems}") from None

    def translate(self, lines: Sequence[str], return_attention: bool = False,
                  progress: bool = False, **decode_overrides: object) -> list[Translation]:
        opts = self.decode_options(**decode_overrides)
        src_ids = [_cap_source(ids, min(MAX_SOURCE_PIECES, self.max_positions or MAX_SOURCE_PIECES))
                   for ids in
                   self.tokenizer.encode_src([line.strip() for line in lines])]
        results: list[Translation | None] = [None] * len(lines)
        order = sorted((i for i, line in enumerate(lines) if line.strip()),
                       key=lambda i: -len(src_ids[i]))
        batches = [order[s : s + opts.batch_size] for s in range(0, len(order), opts.batch_size)]
        # one seeded generator per call: the same lines, options and seed, the same samples
        generator = None
        if opts.sample:
            from heedful.decoding.sampling import make_generator

            generator = make_generator(opts.seed, self.device)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(order), unit="sent", desc="translate", leave=False)
        for batch in batches:
            batch_src = [src_ids[i] for i in batch]
            hyps = self._decode_batch(batch_src, opts, return_attention, generator)
            oov = self._copied_source_ids(batch_src)
            for i, nbest in zip(batch, hyps, strict=True):
                results[i] = self._to_translation(src_ids[i], nbest, oov)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return [r if r is not None else Translation("", 0.0) for r in results]

    def _decode_batch(self, src: list[list[int]], opts: DecodeOptions, return_attention: bool,
                      generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
        src_t, src_mask = pad(src, PAD_ID)
        caps = max_lengths(src_mask, opts.max_len_a, opts.max_len_b)
        caps = caps.clamp(max=self.max_positions or MAX_OUTPUT_PIECES)  # read on the host
        device = self.device
        if device.type != "cpu":
            src_t, src_mask = src_t.to(device), src_mask.to(device)
        # torch.device(...) as a context: the tensors decoding creates land on the model's device
        with torch.inference_mode(), torch.device(device), self._autocast():
            repeats = opts.repetition_penalty != 1.0 or opts.no_repeat_ngram_size > 0
            if opts.sample or repeats:
                from heedful.decoding.sampling import SamplingOptions, sample_search

                sampling = SamplingOptions(opts.temperature, opts.top_k, opts.top_p,
                                           opts.repetition_penalty, opts.no_repeat_ngram_size)
                return sample_search(self.model, src_t, src_mask, caps, sampling, generator,
                                     sample=opts.sample, return_attention=return_attention)
            if opts.beam_size == 1 and opts.n_best == 1:
                return greedy_search(self.model, src_t, src_mask, caps, return_attention)
            return beam_search(self.model, src_t, src_mask, caps, opts.beam_size,
                               opts.length_penalty, opts.n_best, return_attention,
                               stop=opts.beam_stop)

    def _autocast(self) -> AbstractContextManager[object]:
        """Autocast to the translator's precision on the model's device (nothing for fp32)."""
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _copied_source_ids(self, src: list[list[int]]) -> list[int] | None:
        """Copy models: the source ids behind the batch's extra output ids (see
        :mod:`heedful.nn.pointer_generator`); None for models without the copy mechanism."""
        if getattr(self.model, "copy", None) is None:
            return None
        src_t, _ = pad(src, PAD_ID)
        mapping = self.model.get_buffer("src_to_tgt").cpu()
        return extend_source(src_t, mapping, self.tokenizer.tgt_vocab_size)[1].tolist()

    def _to_translation(self, src: list[int], nbest: list[Hypothesis],
                        oov: list[int] | None = None) -> Translation:
        best = nbest[0]
        tok = self.tokenizer

        def text(ids: list[int]) -> str:
            return tok.decode_tgt(ids) if oov is None else extended_text(tok, ids, oov)

        return Translation(
            text=text(best.tokens),
            score=best.norm_score,
            n_best=[(text(h.tokens), h.norm_score) for h in nbest],
            src_pieces=tok.src_pieces(src),
            tgt_pieces=(tok.tgt_pieces(best.tokens) if oov is None
                        else extended_pieces(tok, best.tokens, oov)),
            attention=None if best.attention is None else best.attention.cpu(),
            num_tokens=len(best.tokens),
        )

    def translate_stream(self, lines: Iterable[str], chunk_size: int | None = None,
                         progress: bool = False, **decode_overrides: object
                         ) -> Iterator[Translation]:
        """:meth:`translate` over an input of any length in constant memory: ``chunk_size``
        lines at a time (default ``STREAM_CHUNK``; each chunk sorted by length into batches),
        the results yielded in input order as each chunk is done."""
        opts = self.decode_options(**decode_overrides)
        chunk_size = chunk_size or STREAM_CHUNK
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit="sent", desc="translate", leave=False)
        try:
            for chunk in _chunked(lines, chunk_size):
                yield from self.translate(chunk, **opts.model_dump())
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    def translate_lines(self, lines: Iterable[str], **kwargs: object) -> list[str]:
        return [t.text for t in self.translate(list(lines), **kwargs)]  # type: ignore[arg-type]


def _chunked(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while chunk := list(islice(it, size)):
        yield chunk
