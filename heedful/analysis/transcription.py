"""How well a run reads its non-text inputs: CER, WER and exact match, overall and by target
length (``heedful evaluate`` on an image or audio run)."""

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
    """Transcribe ``inputs`` (image or WAV paths) and score them against ``references``:
    ``cer``, ``wer``, ``exact_match`` (0-1), ``sentences``, the speed (``images_per_s``, or
    ``utterances_per_s`` and ``real_time_factor`` for audio), and with ``by_length`` the same
    per target length (``by_length``: a list of rows, shortest first; ``length_unit``: words
    for spaced targets, else characters)."""
    import time

    start = time.monotonic()
    hyps = [t.text for t in transcriber.translate(list(inputs), progress=progress,
                                                  **overrides)]
    seconds = time.monotonic() - start
    if hyp_output:
        Path(hyp_output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    report: dict[str, Any] = {**error_rates(hyps, references), "sentences": len(hyps)}
    if transcriber.config.data.source == "audio":
        import soundfile as sf

        audio = sum(sf.info(str(path)).duration for path in inputs if str(path).strip())
        report["utterances_per_s"] = round(len(hyps) / max(seconds, 1e-9), 1)
        # decoding seconds per second of audio (below 1: faster than real time)
        report["real_time_factor"] = round(seconds / max(audio, 1e-9), 4)
    else:
        report["images_per_s"] = round(len(hyps) / max(seconds, 1e-9), 1)
    if by_length:
        # spaced targets (spoken digits "4 0 7") are counted in words, others in characters
        words = any(" " in ref.strip() for ref in references)
        report["length_unit"] = "words" if words else "characters"
        groups: dict[int, list[int]] = defaultdict(list)
        for i, ref in enumerate(references):
            groups[len(ref.split()) if words else len(ref)].append(i)
        report["by_length"] = [
            {"length": length, "sentences": len(rows),
             **error_rates([hyps[i] for i in rows], [references[i] for i in rows])}
            for length, rows in sorted(groups.items())]
    return report


def format_transcription(report: dict[str, Any]) -> str:
    """The report as lines for a terminal."""
    speed = (f"{report['images_per_s']:,} per second" if "images_per_s" in report else
             f"{report['utterances_per_s']:,} per second, real-time factor "
             f"{report['real_time_factor']}")
    lines = [f"CER {100 * report['cer']:.2f}%  WER {100 * report['wer']:.2f}%  exact match "
             f"{100 * report['exact_match']:.1f}%  ({report['sentences']:,} inputs, {speed})"]
    if "by_length" in report:
        lines.append(f"{'length':>6} {'inputs':>7} {'exact':>7} {'CER':>7}   (length in "
                     f"{report['length_unit']})")
        for row in report["by_length"]:
            lines.append(f"{row['length']:>6} {row['sentences']:>7,} "
                         f"{100 * row['exact_match']:>6.1f}% {100 * row['cer']:>6.2f}%")
    return "\n".join(lines)
