"""The decoding options, declared once.

:class:`DecodeOptions` is the ``decode`` section of a config, the keyword arguments of
:meth:`heedful.Translator.translate`, the ``--beam-size``-style flags of every decoding command
(:func:`heedful.cli.options.add_decode_options` derives them from the fields below) and the
decoding fields of the HTTP API's request (:func:`optional_fields` derives them). The rules
that tie options together live in :meth:`DecodeOptions._check_search`, so a bad combination
fails before any work, wherever it comes from.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

SplitLanguage = Literal["am", "ar", "bg", "da", "de", "el", "en", "es", "fa", "fr", "hi", "hy",
                        "it", "ja", "kk", "mr", "my", "nl", "pl", "ru", "sk", "ur", "zh"]
"""The languages pysbd segments (``pysbd.languages.LANGUAGE_CODES``)."""


class DecodeOptions(BaseModel):
    """How outputs are searched for: greedy or beam search, or sampling."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              use_attribute_docstrings=True)

    beam_size: int = Field(5, gt=0)
    """Hypotheses kept per sentence; 1 = greedy search."""
    length_penalty: float = Field(1.0, ge=0, le=10)
    """GNMT length penalty alpha: scores are divided by ((5 + length) / 6) ** alpha."""
    max_len_a: float = Field(1.5, gt=0)
    """Outputs are capped at max_len_a * source length + max_len_b subwords."""
    max_len_b: int = Field(10, ge=0)
    """See max_len_a."""
    n_best: int = Field(1, gt=0)
    """Hypotheses returned per sentence (at most beam_size)."""
    beam_stop: Literal["certain", "top_finished"] = "certain"
    """When beam search ends a sentence. ``certain``: once no hypothesis still in the beam
    can beat the n-best finished ones (exact for the length penalty; may run longer).
    ``top_finished``: once the best candidate of a step is EOS and n_best hypotheses have
    finished (OpenNMT-py's and Joey NMT's rule; faster)."""
    batch_size: int = Field(64, gt=0)
    """Sentences per decoding batch."""
    sample: bool = False
    """Draw each token at random (temperature, top_k, top_p) instead of greedy/beam search."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature: < 1 sharpens the distribution, > 1 flattens it."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only (0 = all)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Sample from the smallest set of most likely tokens whose mass reaches p (nucleus)."""
    repetition_penalty: float = Field(1.0, gt=0)
    """> 1 makes already generated tokens less likely (CTRL); greedy search and sampling."""
    no_repeat_ngram_size: int = Field(0, ge=0)
    """Never repeat an n-gram of this size (0 = off); greedy search and sampling."""
    seed: int = 0
    """Seed of the sampler: the same input, options and seed give the same output."""
    split_sentences: bool = False
    """Split each input line into sentences (pysbd), translate them as one batch and join each
    line's translations with a space: one output line per input line. For long documents."""
    split_language: SplitLanguage = "en"
    """Language of the source text for split_sentences (pysbd's rules for abbreviations and
    punctuation)."""
    strict: bool = False
    """An input longer than the model takes is an error instead of a warning (it is cut)."""

    @model_validator(mode="after")
    def _check_search(self) -> DecodeOptions:
        if self.sample and self.n_best > 1:
            raise ValueError("decode.n_best must be 1 with decode.sample: true")
        if not self.sample and self.n_best > self.beam_size:
            raise ValueError(f"n_best ({self.n_best}) cannot exceed beam_size ({self.beam_size})")
        repeats = self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0
        if repeats and not self.sample and self.beam_size > 1:
            raise ValueError("decode.repetition_penalty and decode.no_repeat_ngram_size apply "
                             "to greedy search (beam_size: 1) and to sampling (sample: true)")
        if self.split_sentences and self.n_best > 1:
            raise ValueError("decode.split_sentences gives one translation per line: it needs "
                             "n_best: 1")
        return self


DECODE_OPTION_NAMES: tuple[str, ...] = tuple(DecodeOptions.model_fields)
"""Every decoding option, in declaration order."""


def field_doc(name: str) -> str:
    """The one-paragraph description of a decoding option (its docstring), for help texts."""
    return " ".join((DecodeOptions.model_fields[name].description or "").split())


def optional_fields(caps: dict[str, dict[str, Any]] | None = None
                    ) -> dict[str, tuple[Any, FieldInfo]]:
    """Every decoding option as an optional field (``None`` = the model's own setting) with
    the same constraints, for a request schema (``pydantic.create_model``). ``caps`` adds
    constraints, e.g. ``{"beam_size": {"le": 64}}`` for a server's resource limits."""
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name, info in DecodeOptions.model_fields.items():
        extra = (caps or {}).get(name, {})
        merged = FieldInfo.merge_field_infos(info, Field(None, **extra))
        fields[name] = (Optional[info.annotation], merged)  # noqa: UP045 (a runtime type)
    return fields
