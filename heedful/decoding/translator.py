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
from heedful.config import Config, ConfigError, frontend_of, load_config
from heedful.data import pad
from heedful.decoding.constrained import constrained_beam_search
from heedful.decoding.options import DecodeOptions
from heedful.decoding.search import Hypothesis, beam_search, greedy_search, max_lengths
from heedful.decoding.sentences import SplitLines, split_lines
from heedful.errors import DataError, LongInputWarning
from heedful.nn.architectures import build_model
from heedful.nn.pointer_generator import extend_source, extended_pieces, extended_text
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.device import resolve_device
from heedful.runtime.gemm import as_plain_linear
from heedful.runtime.precision import autocast_dtype, check_precision
from heedful.tokenizer import PAD_ID, Tokenizer

SHIPPED_MODELS_DIR = Path(__file__).parent.parent / "pretrained"
MAX_SOURCE_PIECES = 1024
"""Longer inputs are cut to this many subwords, with a warning (an error with ``strict``)."""
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
    source_cut: int = 0
    """Subwords cut from the end of an input longer than the model takes (0: none)."""


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
        model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size,
                        frontend=frontend_of(config))
        load_model_weights(model, ckpt)  # read into the CPU model: a GPU-saved run loads anywhere
        return translator_for(model.to(target), tokenizer, config, precision=precision)

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
                  progress: bool = False, constraints: Sequence[Sequence[str]] | None = None,
                  first_line: int = 1, **decode_overrides: object) -> list[Translation]:
        """One :class:`Translation` per line, in order (an empty line gives an empty one).

        ``constraints``: per line, target phrases its translation must contain (lexically
        constrained beam search, :mod:`heedful.decoding.constrained`); a line with none is
        translated as without. ``first_line``: the number of ``lines[0]`` in warnings and
        errors. An input longer than the model takes is cut, with a
        :class:`~heedful.errors.LongInputWarning` naming the line (a
        :class:`~heedful.errors.DataError` with ``strict``); ``split_sentences`` translates
        each line sentence by sentence instead."""
        opts = self.decode_options(**decode_overrides)
        if constraints is not None:
            constraints = check_constraints(constraints, len(lines), opts)
        numbers = range(first_line, first_line + len(lines))
        if not opts.split_sentences:
            return self._translate(list(lines), list(numbers), opts, return_attention,
                                   progress, constraints)
        if return_attention or constraints is not None:
            raise ConfigError("split_sentences gives each line several translations: it takes "
                              "neither return_attention nor constraints")
        split = split_lines(lines, opts.split_language)
        parts = self._translate(split.sentences, [numbers[o] for o in split.owner], opts,
                                False, progress, None)
        return _joined(split, parts)

    def _translate(self, lines: list[str], numbers: list[int], opts: DecodeOptions,
                   return_attention: bool, progress: bool,
                   constraints: Sequence[Sequence[str]] | None) -> list[Translation]:
        """:meth:`translate` of whole lines; ``numbers``: each line's number for messages."""
        limit = min(MAX_SOURCE_PIECES, self.max_positions or MAX_SOURCE_PIECES)
        encoded = self.tokenizer.encode_src([line.strip() for line in lines])
        cuts = _report_cuts(encoded, limit, numbers, opts)
        src_ids = [_cap_source(ids, limit) for ids in encoded]
        phrases = (None if constraints is None
                   else self._constraint_ids(constraints, src_ids, numbers, opts))
        results: list[Translation | None] = [None] * len(lines)
        order = sorted((i for i, line in enumerate(lines) if line.strip()),
                       key=lambda i: -len(src_ids[i]))
        # lines with constraints decode apart: the others are translated exactly as without
        groups = [order] if phrases is None else [[i for i in order if not phrases[i]],
                                                 [i for i in order if phrases[i]]]
        batches = [g[s : s + opts.batch_size] for g in groups
                   for s in range(0, len(g), opts.batch_size)]
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
            wanted = None if phrases is None or not phrases[batch[0]] else [
                phrases[i] for i in batch]
            hyps = self._decode_batch(batch_src, opts, return_attention, generator, wanted)
            oov = self._copied_source_ids(batch_src)
            for i, nbest in zip(batch, hyps, strict=True):
                result = self._to_translation(src_ids[i], nbest, oov)
                result.source_cut = cuts[i]
                results[i] = result
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return [r if r is not None else Translation("", 0.0) for r in results]

    def _constraint_ids(self, constraints: Sequence[Sequence[str]], src_ids: list[list[int]],
                        numbers: list[int], opts: DecodeOptions) -> list[list[list[int]]]:
        """Each line's constraints as target subword ids, each phrase segmented as it reads
        mid-sentence (after a space: SentencePiece's ``▁`` prefix); a line whose phrases
        cannot fit in its output cap is a :class:`~heedful.errors.DataError`."""
        out = []
        for ids, phrases, number in zip(src_ids, constraints, numbers, strict=True):
            pieces = self.tokenizer.encode_tgt(list(phrases)) if phrases else []
            need = sum(len(p) for p in pieces)
            if need:
                cap = int(max_lengths(torch.ones(1, len(ids), dtype=torch.bool),
                                      opts.max_len_a, opts.max_len_b)[0])
                cap = min(cap, self.max_positions or MAX_OUTPUT_PIECES)
                if need > cap:
                    raise DataError(
                        f"input line {number}: its constraints take {need} subwords, more than "
                        f"its output may have ({cap}: max_len_a × source length + max_len_b); "
                        "raise --max-len-b or give fewer constraints")
            out.append(pieces)
        return out

    def _decode_batch(self, src: list[list[int]], opts: DecodeOptions, return_attention: bool,
                      generator: torch.Generator | None = None,
                      constraints: list[list[list[int]]] | None = None
                      ) -> list[list[Hypothesis]]:
        src_t, src_mask = pad(src, PAD_ID)
        return self._search(src_t, src_mask, opts, return_attention, generator, constraints)

    def _search(self, src_t: Tensor, src_mask: Tensor, opts: DecodeOptions,
                return_attention: bool, generator: torch.Generator | None = None,
                constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """Decode a padded source batch (on the host) as ``opts`` says."""
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
            if constraints is not None:
                glue = torch.tensor(self.tokenizer.tgt_continues_word(), dtype=torch.bool)
                return constrained_beam_search(
                    self.model, src_t, src_mask, caps, constraints, opts.beam_size,
                    opts.length_penalty, opts.n_best, return_attention, stop=opts.beam_stop,
                    continues_word=glue)
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
                         progress: bool = False,
                         constraints: Iterable[Sequence[str]] | None = None,
                         **decode_overrides: object) -> Iterator[Translation]:
        """:meth:`translate` over an input of any length in constant memory: ``chunk_size``
        lines at a time (default ``STREAM_CHUNK``; each chunk sorted by length into batches),
        the results yielded in input order as each chunk is done. ``constraints``: one list of
        phrases per line, read alongside (as many as there are lines)."""
        opts = self.decode_options(**decode_overrides)
        chunk_size = chunk_size or STREAM_CHUNK
        wanted = None if constraints is None else iter(constraints)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit="sent", desc="translate", leave=False)
        try:
            first = 1
            for chunk in _chunked(lines, chunk_size):
                phrases = None if wanted is None else list(islice(wanted, len(chunk)))
                if phrases is not None and len(phrases) < len(chunk):
                    raise DataError(f"the constraints end after line {first + len(phrases) - 1}"
                                    " but the input goes on: give one list (maybe []) per line")
                yield from self.translate(chunk, constraints=phrases, first_line=first,
                                          **opts.model_dump())
                first += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if wanted is not None and next(wanted, None) is not None:
                raise DataError(f"the constraints go on after the input's last line "
                                f"({first - 1}): give one list (maybe []) per line")
        finally:
            if bar is not None:
                bar.close()

    def translate_lines(self, lines: Iterable[str], **kwargs: object) -> list[str]:
        return [t.text for t in self.translate(list(lines), **kwargs)]  # type: ignore[arg-type]


SOURCE_DECODERS: dict[str, type[Translator]] = {}
"""The decoder class of each non-text ``data.source``, registered by its module
(:mod:`heedful.decoding.transcriber` registers ``image``; importing ``heedful`` imports it)."""


def translator_for(model: Seq2SeqModel, tokenizer: Tokenizer, config: Config,
                   precision: str = "fp32") -> Translator:
    """The decoder of the run's inputs: a :class:`Translator` for source text, the
    registered class (:data:`SOURCE_DECODERS`) for other sources."""
    cls = Translator if config.data.source == "text" else SOURCE_DECODERS[config.data.source]
    return cls(model, tokenizer, config, precision=precision)


def _report_cuts(encoded: list[list[int]], limit: int, numbers: list[int],
                 opts: DecodeOptions) -> list[int]:
    """How many subwords each input loses to the model's limit; a warning for each one cut
    (a :class:`~heedful.errors.DataError` for the first, with ``strict``)."""
    import warnings

    cuts = [max(len(ids) - limit, 0) for ids in encoded]
    hint = "" if opts.split_sentences else "; --split-sentences translates it sentence by sentence"
    for cut, ids, number in zip(cuts, encoded, numbers, strict=True):
        if not cut:
            continue
        what = f"input line {number}{' (one of its sentences)' if opts.split_sentences else ''}"
        if opts.strict:
            raise DataError(f"{what} has {len(ids):,} subwords, more than the {limit:,} the "
                            f"model takes ({cut:,} would be cut){hint}")
        warnings.warn(f"{what} has {len(ids):,} subwords, more than the {limit:,} the model "
                      f"takes: its last {cut:,} were cut{hint}", LongInputWarning, stacklevel=4)
    return cuts


def check_constraints(constraints: Sequence[Sequence[str]], num_lines: int,
                       opts: DecodeOptions) -> Sequence[Sequence[str]]:
    """The per-line constraints, checked: one list of non-empty phrases per line, and
    options that beam search can honour them with."""
    if isinstance(constraints, str) or len(constraints) != num_lines:
        raise DataError(f"constraints: give one list of phrases per line ({num_lines} lines)")
    if opts.sample or opts.repetition_penalty != 1.0 or opts.no_repeat_ngram_size > 0:
        raise ConfigError("constraints need beam search: not with sample, repetition_penalty "
                          "or no_repeat_ngram_size")
    for i, phrases in enumerate(constraints):
        if isinstance(phrases, str) or not all(isinstance(p, str) and p.strip()
                                               for p in phrases):
            raise DataError(f"constraints of line {i + 1}: give a list of non-empty phrases, "
                            f"not {phrases!r}")
    return constraints


def _joined(split: SplitLines, parts: list[Translation]) -> list[Translation]:
    """One translation per input line from its sentences' translations (``split_sentences``):
    the texts joined with a space, the mean of their scores, the pieces concatenated."""
    by_line: list[list[Translation]] = [[] for _ in range(split.num_lines)]
    for p, owner in zip(parts, split.owner, strict=True):
        by_line[owner].append(p)
    out = []
    for text, mine in zip(split.join([p.text for p in parts]), by_line, strict=True):
        score = sum(p.score for p in mine) / len(mine) if mine else 0.0
        out.append(Translation(
            text, score, [(text, score)] if mine else [],
            src_pieces=[x for p in mine for x in p.src_pieces],
            tgt_pieces=[x for p in mine for x in p.tgt_pieces],
            num_tokens=sum(p.num_tokens for p in mine),
            source_cut=sum(p.source_cut for p in mine)))
    return out


def _chunked(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """``size`` lines at a time; where reading a line fails (bad input), the lines before it
    come first, then the error."""
    chunk: list[str] = []
    try:
        for line in lines:
            chunk.append(line)
            if len(chunk) == size:
                yield chunk
                chunk = []
    except DataError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk
