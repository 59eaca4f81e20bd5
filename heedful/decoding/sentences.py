"""Sentence splitting for long inputs (``split_sentences``): each input line becomes its
sentences, the sentences of all lines are translated as one batch, and each line's
translations are joined back, in order, with a single space.

The segmenter is pysbd (Sadvilkar & Neumann 2020): rule-based, pure Python with no
dependencies, 23 languages including Spanish (its rules know ``¿``/``¡`` and Spanish
abbreviations), and it keeps the text as given (``clean=False``). sacremoses, the other
candidate, ships its Moses sentence splitter as a stub that raises ``NotImplementedError``
(0.2.0). docs/decoding.md has the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass
class SplitLines:
    """Lines split into sentences: ``sentences`` (all lines' sentences, in order) and
    ``owner`` (the index of the input line of each sentence). A line that is empty or
    blank has no sentences; :meth:`join` gives it an empty output."""

    sentences: list[str]
    owner: list[int]
    num_lines: int

    def join(self, translations: Sequence[str]) -> list[str]:
        """One output per input line: its sentences' ``translations`` joined with a space."""
        parts: list[list[str]] = [[] for _ in range(self.num_lines)]
        for line, text in zip(self.owner, translations, strict=True):
            if text:
                parts[line].append(text)
        return [" ".join(p) for p in parts]


@lru_cache(maxsize=8)
def _segmenter(language: str) -> Any:
    import pysbd

    return pysbd.Segmenter(language=language, clean=False)


def split_sentences(text: str, language: str = "en") -> list[str]:
    """The sentences of ``text`` (stripped, none empty) by pysbd's rules for ``language``."""
    text = " ".join(text.split())  # pysbd keeps inner newlines and tabs; a line has none
    if not text:
        return []
    return [s.strip() for s in _segmenter(language).segment(text) if s.strip()]


def split_lines(lines: Sequence[str], language: str = "en") -> SplitLines:
    """Every line's sentences, and which line each came from."""
    sentences: list[str] = []
    owner: list[int] = []
    for i, line in enumerate(lines):
        for s in split_sentences(line, language):
            sentences.append(s)
            owner.append(i)
    return SplitLines(sentences, owner, len(lines))
