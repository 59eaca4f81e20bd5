"""Reports on a trained model, as the console script prints them: the perplexity of
references, the alignment error rate against gold links, the metrics of outputs, the whole
``heedful evaluate`` report and the rows of ``heedful compare``.

Every function takes plain values (a translator, lists of lines, paths) and returns plain
JSON-ready dictionaries; the ``format_*`` functions turn them into the text the console script
prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heedful.errors import DataError

if TYPE_CHECKING:
    from heedful.analysis.attention_alignment import AlignSettings
    from heedful.analysis.word_alignment import Link
    from heedful.decoding.translator import Translator


def perplexity(translator: Translator, src: Sequence[str], ref: Sequence[str]) -> float:
    """exp(- mean log-probability per reference subword, EOS included), rounded to 3 places."""
    from heedful.decoding.forced import force_decode

    tok = translator.tokenizer
    results = force_decode(translator.model, tok.encode_src(list(src)),
                           tok.encode_tgt(list(ref)))
    total = sum(r.log_prob for r in results)
    count = sum(r.num_tokens for r in results)
    return round(math.exp(-total / max(count, 1)), 3)


def read_gold(path: str | Path, expected: int, what: str) -> list[set[Link]]:
    """Gold links (Pharaoh ``i-j``, one line per sentence) for ``expected`` sentences; ``what``
    ("sure", "possible") names them in the error for a wrong line count."""
    from heedful.analysis.word_alignment import read_alignments

    gold = read_alignments(path)
    if len(gold) != expected:
        raise DataError(f"{path}: {len(gold)} lines of {what} links for {expected} sentences")
    return gold


def alignment_report(translator: Translator, settings: AlignSettings, src: Sequence[str],
                     ref: Sequence[str], sure: Sequence[set[Link]],
                     possible: Sequence[set[Link]] | None, progress: bool = False
                     ) -> dict[str, Any]:
    """Force-decode the pairs, read links from the attention with ``settings`` and score them
    against the gold: the settings' description, AER, precision, recall and link counts."""
    from heedful.analysis.attention_alignment import check_settings, pair_attention
    from heedful.analysis.word_alignment import alignment_scores

    pairs = pair_attention(translator, src, ref, progress=progress)
    check_settings(settings, pairs)
    predicted = [p.links(settings) for p in pairs]
    return {"settings": settings.describe(),
            **alignment_scores(predicted, sure, possible).as_dict()}


def output_metrics(hyps: Sequence[str], refs: Sequence[str], rouge: bool = False,
                   distinct: bool = False, lowercase_bleu: bool = False) -> dict[str, Any]:
    """The optional metrics of outputs: ROUGE-1/2/L F1 (``rouge``), distinct-1/2
    (``distinct``) and lowercased BLEU (``lowercase_bleu``: keys ``bleu_lc`` and
    ``bleu_lc_signature``); an empty dict when none is asked for."""
    report: dict[str, Any] = {}
    if lowercase_bleu:
        from heedful.analysis.metrics import lowercased_bleu

        report["bleu_lc"], report["bleu_lc_signature"] = lowercased_bleu(hyps, refs)
    if rouge:
        from heedful.analysis.metrics import score_rouge

        report["rouge"] = score_rouge(hyps, refs)
    if distinct:
        from heedful.decoding.chat import distinct_n

        report["distinct_1"] = round(distinct_n(list(hyps), 1), 4)
        report["distinct_2"] = round(distinct_n(list(hyps), 2), 4)
    return report


def metrics_report(hyps: Sequence[str], refs: Sequence[str], rouge: bool = False,
                   distinct: bool = False, lowercase_bleu: bool = False) -> dict[str, Any]:
    """BLEU and chrF with their sacrebleu signatures, plus :func:`output_metrics`."""
    from heedful.analysis.metrics import score_corpus
    from heedful.errors import DataError

    if not hyps:
        raise DataError("no lines to score: the hypothesis and reference files are empty")
    return {**score_corpus(hyps, refs).as_dict(),
            **output_metrics(hyps, refs, rouge, distinct, lowercase_bleu)}


def evaluate_report(translator: Translator, src: Sequence[str], ref: Sequence[str],
                    decode: dict[str, Any] | None = None, *, rouge: bool = False,
                    distinct: bool = False, with_perplexity: bool = False,
                    edges: Sequence[int] | None = None, bootstrap: int = 1000,
                    plot: str | Path | None = None, plot_label: str = "model",
                    alignment: tuple[AlignSettings, Sequence[set[Link]],
                                     Sequence[set[Link]] | None] | None = None,
                    hyp_output: str | Path | None = None, progress: bool = False,
                    lowercase_bleu: bool = False) -> dict[str, Any]:
    """Translate ``src`` with the ``decode`` overrides and measure the outputs against ``ref``.

    Always: BLEU/chrF with signatures, the beam size, decode seconds and sentences per second.
    Optional: ROUGE (``rouge``), distinct-1/2 (``distinct``), lowercased BLEU
    (``lowercase_bleu``), the references' perplexity
    (``with_perplexity``), BLEU/chrF per source-length bucket (``edges``, with ``bootstrap``
    resamples; ``plot`` draws the curve labelled ``plot_label``) and the alignment error rate
    (``alignment`` = (settings, sure links, possible links)). ``hyp_output`` also writes the
    translations there, one per line.
    """
    decode = decode or {}
    opts = translator.decode_options(**decode)  # bad options fail before any decoding
    start = time.perf_counter()
    results = translator.translate(list(src), progress=progress, **decode)
    seconds = time.perf_counter() - start
    hyps = [r.text for r in results]
    if hyp_output:
        Path(hyp_output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    from heedful.analysis.metrics import score_corpus

    report: dict[str, Any] = {
        **score_corpus(hyps, ref).as_dict(), "beam_size": opts.beam_size,
        "decode_seconds": round(seconds, 2),
        "sentences_per_second": round(len(src) / seconds, 2),
        **output_metrics(hyps, ref, rouge, distinct, lowercase_bleu)}
    if with_perplexity:
        report["perplexity"] = perplexity(translator, src, ref)
    if edges is not None:
        report.update(_by_length_report(src, hyps, ref, edges, bootstrap, plot, plot_label))
    if alignment is not None:
        report["alignment"] = alignment_report(translator, alignment[0], src, ref,
                                               alignment[1], alignment[2], progress)
    return report


def _by_length_report(src: Sequence[str], hyps: Sequence[str], ref: Sequence[str],
                      edges: Sequence[int], bootstrap: int, plot: str | Path | None,
                      label: str) -> dict[str, Any]:
    from heedful.analysis.by_length import by_length, plot_by_length

    buckets = by_length(src, hyps, ref, edges, samples=bootstrap)
    report: dict[str, Any] = {"by_length": [b.as_dict() for b in buckets]}
    if plot:
        report["plot"] = str(plot_by_length({label: buckets}, plot))
    return report


def format_metrics(report: dict[str, Any]) -> list[str]:
    """The text lines of BLEU, chrF and (where the report has them) ROUGE and distinct-n."""
    lines = [f"BLEU  {report['bleu']:6.2f}   {report['bleu_signature']}",
             f"chrF  {report['chrf']:6.2f}   {report['chrf_signature']}"]
    if "bleu_lc" in report:
        lines.insert(1, f"BLEU lc {report['bleu_lc']:6.2f}   {report['bleu_lc_signature']} "
                        "(lowercased)")
    if "rouge" in report:
        r = report["rouge"]
        lines.append(f"ROUGE-1 {r['rouge1']:.2f}  ROUGE-2 {r['rouge2']:.2f}  ROUGE-L "
                     f"{r['rougeL']:.2f}   (F1 x 100, rouge-score, stemmed)")
    if "distinct_1" in report:
        lines.append(f"distinct-1 {report['distinct_1']:.4f}  "
                     f"distinct-2 {report['distinct_2']:.4f}")
    return lines


def format_evaluate(report: dict[str, Any]) -> str:
    """The text of an :func:`evaluate_report` as ``heedful evaluate`` prints it."""
    from heedful.analysis.by_length import Bucket, format_table

    lines = format_metrics(report)
    if "perplexity" in report:
        lines.append(f"perplexity {report['perplexity']:.2f} (references, per subword incl. EOS)")
    lines.append(f"{report['num_sentences']} sentences, beam {report['beam_size']}, "
                 f"{report['decode_seconds']:.1f} s ({report['sentences_per_second']} sent/s)")
    if "by_length" in report:
        buckets = [Bucket(**b) for b in report["by_length"]]
        lines += ["", format_table(buckets, "by source length (95% bootstrap intervals):")]
        if "plot" in report:
            lines.append(f"plot written to {report['plot']}")
    if "alignment" in report:
        lines += ["", *format_alignment(report["alignment"])]
    return "\n".join(lines)


def format_alignment(a: dict[str, Any]) -> list[str]:
    """The text lines of an :func:`alignment_report`."""
    return [f"alignment ({a['settings']}), {a['sentences']} sentences:",
            f"  all links:        AER {a['aer']:.3f}  precision {a['precision']:.3f}  "
            f"recall {a['recall']:.3f}  ({a['predicted_links']} links)",
            f"  restricted links: AER {a['aer_restricted']:.3f}  precision "
            f"{a['precision_restricted']:.3f}  recall {a['recall']:.3f}  "
            f"({a['predicted_links_restricted']} links)"]


def compare_row(translator: Translator, label: str, run_dir: str, src: Sequence[str],
                ref: Sequence[str], edges: Sequence[int], decode: dict[str, Any] | None = None,
                bootstrap: int = 1000, progress: bool = False) -> dict[str, Any]:
    """One run of ``heedful compare``: its overall BLEU/chrF and both per source-length
    bucket (``by_length``: one :meth:`Bucket.as_dict` per bucket)."""
    from heedful.analysis.by_length import by_length
    from heedful.analysis.metrics import score_corpus

    hyps = translator.translate_lines(list(src), progress=progress, **(decode or {}))
    overall = score_corpus(hyps, ref)
    buckets = by_length(src, hyps, ref, edges, samples=bootstrap)
    return {"run": label, "run_dir": run_dir, "bleu": overall.bleu, "chrf": overall.chrf,
            "by_length": [b.as_dict() for b in buckets]}


def plot_compare(rows: Sequence[dict[str, Any]], path: str | Path, metric: str = "bleu"
                 ) -> Path:
    """The by-length curves of :func:`compare_row` rows, one line per run, as a PNG."""
    from heedful.analysis.by_length import Bucket, plot_by_length

    curves: dict[str, Sequence[Bucket]] = {
        row["run"]: [Bucket(**b) for b in row["by_length"]] for row in rows}
    return plot_by_length(curves, path, metric)


def format_compare(rows: Sequence[dict[str, Any]], metric: str = "bleu") -> str:
    """The table of ``heedful compare``: ``metric`` overall and per bucket, one row per run."""
    first = rows[0]["by_length"]
    lines = [f"{metric.upper() if metric == 'bleu' else 'chrF'} by source length (words); "
             "n = sentences per bucket",
             f"{'run':20s} {'all':>6s} " + " ".join(f"{b['label']:>8s}" for b in first),
             f"{'n':20s} {'':6s} " + " ".join(f"{b['sentences']:8d}" for b in first)]
    for row in rows:
        cells = " ".join(f"{b[metric]:8.2f}" if b[metric] is not None else f"{'-':>8s}"
                         for b in row["by_length"])
        lines.append(f"{row['run']:20s} {row[metric]:6.2f} {cells}")
    return "\n".join(lines)
