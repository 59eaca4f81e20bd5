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


def lowercased_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus BLEU of lowercased text (sacrebleu ``-lc``, 13a tokenization) and its signature:
    the figure most papers on Multi30k and IWSLT report (tokenized, lowercased), which the
    default mixed-case BLEU is not comparable with."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(lowercase=True)
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return round(score.score, 2), str(bleu.get_signature())


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Character and word error rates (jiwer: edit distance over the references' length,
    corpus-level) and the share of exact matches — what transcriptions are judged by."""
    import jiwer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        return {"cer": 0.0, "wer": 0.0, "exact_match": 0.0}
    # jiwer refuses empty references: such a pair counts in exact match only
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    cer = float(jiwer.cer(refs, hyps)) if refs else 0.0
    wer = float(jiwer.wer(refs, hyps)) if refs else 0.0
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return {"cer": round(cer, 4), "wer": round(wer, 4),
            "exact_match": round(exact / len(references), 4)}


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
