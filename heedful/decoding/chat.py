"""Dialogue: response diversity (distinct-n) and a chat session that keeps its context.

A dialogue model is an ordinary seq2seq run whose source is the conversation so far: the last
``context_turns`` turns joined with a separator (``<sep>``, a user-defined SentencePiece
symbol, see ``heedful data chatterbot``) and whose target is the next turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from heedful.corpora import SEPARATOR


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n (Li et al. 2016): distinct n-grams / all n-grams over all responses
    (whitespace tokens, lower-cased). 0.0 when there are no n-grams."""
    total, seen = 0, set()
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


@dataclass
class ChatSession:
    """A conversation with a dialogue model: each reply sees the last ``context_turns``
    turns (the user's and the model's), joined with ``separator``."""

    translator: Any
    context_turns: int = 2
    separator: str = SEPARATOR
    decode: dict[str, Any] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    def context(self, utterance: str) -> str:
        turns = [*self.history, " ".join(utterance.split())][-self.context_turns :]
        return f" {self.separator} ".join(turns)

    def respond(self, utterance: str) -> tuple[str, str]:
        """(context sent to the model, reply); both turns join the history."""
        context = self.context(utterance)
        [result] = self.translator.translate([context], **self.decode)
        self.history += [" ".join(utterance.split()), result.text]
        return context, result.text

    def reset(self) -> None:
        self.history.clear()
