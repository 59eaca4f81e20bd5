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


def score_rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1 (rouge-score, Porter stemmer), averaged over sentences, x 100 — the
    summarization metric (Lin 2004) as Google's rouge-score package computes it.

    Needs ``pip install rouge-score`` (the ``rouge`` extra).
    """
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        from heedful.config import ConfigError

        raise ConfigError("ROUGE needs the rouge-score package: pip install rouge-score") \
            from None
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        for kind, score in scorer.score(ref, hyp).items():
            totals[kind] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {kind: round(100 * total / n, 2) for kind, total in totals.items()}
