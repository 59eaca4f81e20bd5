"""An outside reference for spoken digits: CMU PocketSphinx on the same held-out-speaker audio.

    pip install pocketsphinx          # 5.1.1: bundles the US English acoustic model, LM, dictionary
    python experiments/pocketsphinx_digits.py   # -> docs/pocketsphinx_digits.json

Reads the 500 test utterances of ``data/spoken-digits`` (speaker ``theo``; build the corpus
with ``heedful data spoken-digits --from ../shared/data/fsdd --out data/spoken-digits``),
resamples each from 8 kHz to the acoustic model's 16 kHz (soxr) and decodes it twice:

* ``default``: PocketSphinx as installed, its general US English trigram language model;
* ``digits grammar``: a JSGF grammar that admits only strings of digit words (``zero``/``oh``
  to ``nine``, one or more) — the most help a classic recogniser can be given here.

Digit words are mapped to the corpus's digits (``oh`` and ``zero`` to ``0``); any other word
stays a word (and counts as an error). WER, CER and exact match are heedful's
(:func:`heedful.analysis.metrics.error_rates`, jiwer), overall and by length in digits,
against the same references ``heedful evaluate RUN --split test --by-length`` scores, so the
rows compare with docs/speech_digits.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from image_digits import cpu_name

from heedful.analysis.metrics import error_rates

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "spoken-digits"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_OF = {**{w: str(i) for i, w in enumerate(WORDS)}, "oh": "0"}
GRAMMAR = ("#JSGF V1.0;\ngrammar digits;\n"
           f"public <digits> = ( {' | '.join([*WORDS, 'oh'])} )+ ;\n")


def as_digits(hypothesis: str) -> str:
    return " ".join(DIGIT_OF.get(w, w) for w in hypothesis.lower().split())


def decode_all(decoder: object, search: str, pcm: list[bytes]) -> tuple[list[str], float]:
    """Every utterance's digits under ``search``, and the seconds the decoding took."""
    decoder.activate_search(search)  # type: ignore[attr-defined]
    out, start = [], time.perf_counter()
    for raw in pcm:
        decoder.start_utt()  # type: ignore[attr-defined]
        decoder.process_raw(raw, full_utt=True)  # type: ignore[attr-defined]
        decoder.end_utt()  # type: ignore[attr-defined]
        hyp = decoder.hyp()  # type: ignore[attr-defined]
        out.append(as_digits(hyp.hypstr if hyp is not None else ""))
    return out, time.perf_counter() - start


def report(hyps: list[str], refs: list[str], seconds: float, audio_seconds: float) -> dict:
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ref in enumerate(refs):
        by_length[len(ref.split())].append(i)
    rows = [{"length": n, "sentences": len(ix),
             **error_rates([hyps[i] for i in ix], [refs[i] for i in ix])}
            for n, ix in sorted(by_length.items())]
    return {**error_rates(hyps, refs), "sentences": len(refs),
            "real_time_factor": round(seconds / audio_seconds, 4), "by_length": rows}


def main() -> int:
    from pocketsphinx import Decoder

    entries = [line.split("\t") for line in
               (DATA / "test.tsv").read_text(encoding="utf-8").splitlines()]
    refs = [target.strip() for _, target in entries]
    pcm, audio_seconds = [], 0.0
    for path, _ in entries:
        samples, rate = sf.read(DATA / path, dtype="float32")
        audio_seconds += len(samples) / rate
        resampled = soxr.resample(samples, rate, 16_000)
        pcm.append((np.clip(resampled, -1, 1) * 32767).astype(np.int16).tobytes())
    decoder = Decoder(samprate=16_000, loglevel="FATAL")
    default_search = decoder.current_search()
    decoder.add_jsgf_string("digits", GRAMMAR)
    results = {}
    for name, search in [("default", default_search), ("digits grammar", "digits")]:
        hyps, seconds = decode_all(decoder, search, pcm)
        results[name] = report(hyps, refs, seconds, audio_seconds)
        res = results[name]
        print(f"pocketsphinx {name}: WER {100 * res['wer']:.1f}%  CER {100 * res['cer']:.1f}%  "
              f"exact {100 * res['exact_match']:.1f}%  RTF {res['real_time_factor']}")
    import pocketsphinx

    record = {"command": "python experiments/pocketsphinx_digits.py", "cpu": cpu_name(),
              "date": time.strftime("%Y-%m-%d"),
              "pocketsphinx": getattr(pocketsphinx, "__version__", "5.1.1"),
              "audio_seconds": round(audio_seconds, 1), "results": results}
    (ROOT / "docs" / "pocketsphinx_digits.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
