"""An outside reference for spoken digits: CMU PocketSphinx on the same held-out-speaker audio.

    pip install pocketsphinx          # 5.1.1: bundles the US English acoustic model, LM, dictionary
    python experiments/pocketsphinx_digits.py [--workers 2]  # -> docs/pocketsphinx_digits.json

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
rows compare with docs/speech_digits.json. The real-time factor is CPU seconds of decoding
(summed over the worker processes) per second of audio, so it reads as one core's.
"""

from __future__ import annotations

import argparse
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


def _decode_share(job: tuple[str, list[bytes]]) -> tuple[list[str], float]:
    """One worker's share: every utterance's digits under the search ``job[0]`` ("default"
    or "digits grammar"), and the CPU seconds the decoding took."""
    from pocketsphinx import Decoder

    search, pcm = job
    decoder = Decoder(samprate=16_000, loglevel="FATAL")
    if search == "digits grammar":
        decoder.add_jsgf_string("digits", GRAMMAR)
        decoder.activate_search("digits")
    out, start = [], time.process_time()
    for raw in pcm:
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        out.append(as_digits(hyp.hypstr if hyp is not None else ""))
    return out, time.process_time() - start


def decode_all(search: str, pcm: list[bytes], workers: int) -> tuple[list[str], float]:
    """Every utterance's digits, in order, decoded by ``workers`` processes; the CPU seconds
    of decoding, summed over them (what a real-time factor on one core counts)."""
    from multiprocessing import Pool

    shares = [pcm[i::workers] for i in range(workers)]
    with Pool(workers) as pool:
        parts = pool.map(_decode_share, [(search, share) for share in shares])
    hyps = [""] * len(pcm)
    for i, (out, _) in enumerate(parts):
        hyps[i::workers] = out
    return hyps, sum(seconds for _, seconds in parts)


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    args = ap.parse_args()
    entries = [line.split("\t") for line in
               (DATA / "test.tsv").read_text(encoding="utf-8").splitlines()]
    refs = [target.strip() for _, target in entries]
    pcm, audio_seconds = [], 0.0
    for path, _ in entries:
        samples, rate = sf.read(DATA / path, dtype="float32")
        audio_seconds += len(samples) / rate
        resampled = soxr.resample(samples, rate, 16_000)
        pcm.append((np.clip(resampled, -1, 1) * 32767).astype(np.int16).tobytes())
    results = {}
    for name in ("default", "digits grammar"):
        hyps, seconds = decode_all(name, pcm, args.workers)
        results[name] = report(hyps, refs, seconds, audio_seconds)
        res = results[name]
        print(f"pocketsphinx {name}: WER {100 * res['wer']:.1f}%  CER {100 * res['cer']:.1f}%  "
              f"exact {100 * res['exact_match']:.1f}%  RTF {res['real_time_factor']}")
    import pocketsphinx

    record = {"command": " ".join(["python experiments/pocketsphinx_digits.py", *sys.argv[1:]]),
              "cpu": cpu_name(), "workers": args.workers,
              "date": time.strftime("%Y-%m-%d"),
              "pocketsphinx": getattr(pocketsphinx, "__version__", "5.1.1"),
              "audio_seconds": round(audio_seconds, 1), "results": results}
    (ROOT / "docs" / "pocketsphinx_digits.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
