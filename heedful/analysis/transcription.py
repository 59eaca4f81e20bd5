"""How well a run reads its non-text inputs: CER, WER and exact match, overall and by target
length (``heedful evaluate`` on an image run)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heedful.analysis.metrics import error_rates


def transcription_report(transcriber: Any, inputs: Sequence[str], references: Sequence[str],
                         overrides: dict[str, Any], by_length: bool = False,
                         hyp_output: str | None = None, progress: bool = False
                         ) -> dict[str, Any]:
    """Transcribe ``inputs`` (image paths) and score them against ``references``: ``cer``,
    ``wer``, ``exact_match`` (0-1), ``sentences``, and with ``by_length`` the same per
    target length in characters (``by_length``: a list of rows, shortest first)."""
    import time

    start = time.monotonic()
    hyps = [t.text for t in transcriber.translate(list(inputs), progress=progress,
                                                  **overrides)]
    seconds = time.monotonic() - start
    if hyp_output:
        Path(hyp_output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    report: dict[str, Any] = {**error_rates(hyps, references), "sentences": len(hyps),
                              "images_per_s": round(len(hyps) / max(seconds, 1e-9), 1)}
    if by_length:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, ref in enumerate(references):
            groups[len(ref)].append(i)
        report["by_length"] = [
            {"length": length, "sentences": len(rows),
             **error_rates([hyps[i] for i in rows], [references[i] for i in rows])}
            for length, rows in sorted(groups.items())]
    return report


def format_transcription(report: dict[str, Any]) -> str:
    """The report as lines for a terminal."""
    lines = [f"CER {100 * report['cer']:.2f}%  WER {100 * report['wer']:.2f}%  exact match "
             f"{100 * report['exact_match']:.1f}%  ({report['sentences']:,} inputs, "
             f"{report['images_per_s']:,} per second)"]
    if "by_length" in report:
        lines.append(f"{'length':>6} {'inputs':>7} {'exact':>7} {'CER':>7}")
        for row in report["by_length"]:
            lines.append(f"{row['length']:>6} {row['sentences']:>7,} "
                         f"{100 * row['exact_match']:>6.1f}% {100 * row['cer']:>6.2f}%")
    return "\n".join(lines)
