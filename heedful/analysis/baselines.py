"""Extractive baselines any summarizer must beat (Nallapati et al. 2016; See et al. 2017).

* ``first-sentence``: the first sentence of the input (the "lead" baseline);
* ``first-words``: the first N whitespace words.

``heedful baseline KIND < long.txt > summaries.txt`` writes them; ``heedful evaluate --rouge``
or :func:`heedful.analysis.metrics.score_rouge` scores them.
"""

from __future__ import annotations

import re

# a sentence ends at . ! or ? followed by whitespace and an upper-case letter, a digit or a
# quote; "e.g. foo" or "version 1.2" do not end one
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (the whole text if it has no sentence boundary)."""
    text = " ".join(text.split())
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def first_words(text: str, n: int) -> str:
    """The first ``n`` whitespace words of ``text``."""
    if n < 1:
        raise ValueError(f"first-words needs n >= 1 (got {n})")
    return " ".join(text.split()[:n])


BASELINES = ("first-sentence", "first-words")


def baseline(kind: str, text: str, n: int = 10) -> str:
    if kind == "first-sentence":
        return first_sentence(text)
    if kind == "first-words":
        return first_words(text, n)
    raise ValueError(f"unknown baseline {kind!r}; baselines: {', '.join(BASELINES)}")
