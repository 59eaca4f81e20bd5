"""Quality by source length: BLEU and chrF per length bucket with bootstrap confidence
intervals (the analysis of Bahdanau et al. 2015, Fig. 2, on your own data).

Lengths are in source *words* (``line.split()``). Bucket edges are inclusive upper bounds:
edges (10, 20, 30, 40) give the buckets 1-10, 11-20, 21-30, 31-40 and 41+ (an empty source
line, length 0, falls in the first bucket). Every sentence lands in exactly one bucket.

Confidence intervals: percentile bootstrap over the bucket's sentences (resampled with
replacement, ``samples`` times), re-scoring corpus BLEU/chrF from per-sentence sacrebleu
statistics, so each resample costs a sum, not a re-tokenisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_EDGES = (10, 20, 30, 40)


@dataclass(frozen=True)
class Bucket:
    label: str
    lo: int
    hi: int | None  # None = open-ended
    sentences: int
    bleu: float | None
    bleu_low: float | None
    bleu_high: float | None
    chrf: float | None
    chrf_low: float | None
    chrf_high: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_edges(text: str) -> tuple[int, ...]:
    """``"10,20,30,40"`` -> (10, 20, 30, 40); strictly increasing positive integers."""
    try:
        edges = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--buckets {text!r}: give increasing word counts such as "
                         "10,20,30,40") from None
    if not edges or any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise ValueError(f"--buckets {text!r}: give increasing positive word counts such as "
                         "10,20,30,40")
    return edges


def bucket_bounds(edges: Sequence[int]) -> list[tuple[str, int, int | None]]:
    """(label, lo, hi) for each bucket; the first starts at 1, the last is open."""
    out: list[tuple[str, int, int | None]] = []
    lo = 1
    for e in edges:
        out.append((f"{lo}-{e}", lo, e))
        lo = e + 1
    out.append((f"{lo}+", lo, None))
    return out


def assign_buckets(sources: Sequence[str], edges: Sequence[int]) -> list[int]:
    """Bucket index of each source line (by word count)."""
    bounds = np.asarray(edges)
    return [int(np.searchsorted(bounds, len(s.split()), side="left")) for s in sources]


def _bootstrap(stats: np.ndarray, score_fn: object, samples: int,
               rng: np.random.Generator) -> tuple[float, float, float]:
    compute = score_fn._compute_score_from_stats  # type: ignore[attr-defined]
    point = float(compute(list(stats.sum(0))).score)
    n = len(stats)
    values = [float(compute(list(stats[rng.integers(0, n, n)].sum(0))).score)
              for _ in range(samples)]
    low, high = np.percentile(values, [2.5, 97.5])
    return round(point, 2), round(float(low), 2), round(float(high), 2)


def by_length(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
              edges: Sequence[int] = DEFAULT_EDGES, samples: int = 1000,
              seed: int = 12345) -> list[Bucket]:
    """BLEU/chrF with 95% bootstrap intervals for each source-length bucket."""
    from sacrebleu.metrics import BLEU, CHRF

    if not len(sources) == len(hypotheses) == len(references):
        raise ValueError(f"{len(sources)} sources, {len(hypotheses)} hypotheses and "
                         f"{len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    refs = [list(references)]
    bleu_stats = np.asarray(bleu._extract_corpus_statistics(list(hypotheses), refs))
    chrf_stats = np.asarray(chrf._extract_corpus_statistics(list(hypotheses), refs))
    index = np.asarray(assign_buckets(sources, edges))
    rng = np.random.default_rng(seed)
    out = []
    for k, (label, lo, hi) in enumerate(bucket_bounds(edges)):
        members = np.nonzero(index == k)[0]
        if len(members) == 0:
            out.append(Bucket(label, lo, hi, 0, None, None, None, None, None, None))
            continue
        b = _bootstrap(bleu_stats[members], bleu, samples, rng)
        c = _bootstrap(chrf_stats[members], chrf, samples, rng)
        out.append(Bucket(label, lo, hi, len(members), *b, *c))
    return out


def format_table(buckets: Sequence[Bucket], title: str | None = None) -> str:
    lines = [title] if title else []
    lines.append(f"{'source words':>12s} {'sentences':>9s} {'BLEU':>6s} {'95% CI':>13s} "
                 f"{'chrF':>6s} {'95% CI':>13s}")
    for b in buckets:
        if b.bleu is None:
            lines.append(f"{b.label:>12s} {0:9d} {'-':>6s} {'':13s} {'-':>6s}")
            continue
        lines.append(f"{b.label:>12s} {b.sentences:9d} {b.bleu:6.2f} "
                     f"{f'{b.bleu_low:.1f}-{b.bleu_high:.1f}':>13s} {b.chrf:6.2f} "
                     f"{f'{b.chrf_low:.1f}-{b.chrf_high:.1f}':>13s}")
    return "\n".join(lines)


def plot_by_length(curves: dict[str, Sequence[Bucket]], path: str | Path,
                   metric: str = "bleu", title: str | None = None) -> Path:
    """One line per run: ``metric`` per bucket with its 95% interval as a band."""
    from heedful.analysis.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.2), dpi=110)
    labels: list[str] = []
    for name, buckets in curves.items():
        labels = [b.label for b in buckets]
        xs = [i for i, b in enumerate(buckets) if getattr(b, metric) is not None]
        ys = [getattr(buckets[i], metric) for i in xs]
        lo = [getattr(buckets[i], f"{metric}_low") for i in xs]
        hi = [getattr(buckets[i], f"{metric}_high") for i in xs]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xticks(range(len(labels)))
    counts = next(iter(curves.values())) if curves else []
    ax.set_xticklabels([f"{b.label}\n(n={b.sentences})" for b in counts], fontsize=8)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel(metric.upper() if metric == "bleu" else "chrF")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
