"""Metrics: corpus BLEU and chrF via sacrebleu, reported with their signatures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    num_sentences: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def score_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Corpus-level BLEU and chrF (sacrebleu defaults: 13a tokenization, mixed case)."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    refs = [list(references)]
    b = bleu.corpus_score(list(hypotheses), refs)
    c = chrf.corpus_score(list(hypotheses), refs)
    return Scores(round(b.score, 2), round(c.score, 2), str(bleu.get_signature()),
                  str(chrf.get_signature()), len(hypotheses))
