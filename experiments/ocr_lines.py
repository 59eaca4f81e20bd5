"""Reading text lines in unseen fonts: heedful's ``ocr-lines`` model beside Tesseract.

    python experiments/ocr_lines.py [--minutes 30] [--threads 2] [--run runs/ocr-lines/main]
        # -> docs/ocr_lines.json

Builds the corpus (``heedful data text-lines --out data/text-lines``) if it is missing,
trains the ``ocr-lines`` preset for ``--minutes`` of wall clock (``--threads`` torch threads,
nothing else on the machine; a finished run is reused), then reads the 1,000 test lines —
drawn in font families that training never saw — with heedful (greedy) and with Tesseract
(Debian's ``tesseract-ocr`` + ``tesseract-ocr-eng``, LSTM engine, ``--psm 7``: one text line),
the outside reference. Tesseract reads each image as stored (32 pixels high) and scaled up
3x (bicubic; its documentation asks for text at least 20 pixels high), and the better of the
two is its score. Both are scored with jiwer: CER and WER over the split, case-sensitive and
ignoring case (the handwriting-style fonts draw small letters as capitals), per font family,
and lines per second on ``--threads`` cores (Tesseract: ``--threads`` processes of one thread
each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "text-lines"
DOCS = ROOT / "docs"


def heedful(*argv: str, threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "heedful", *argv], check=True, cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, text=True)
    return done.stdout


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def test_lines(data: Path) -> tuple[list[Path], list[str], list[str]]:
    """(image paths, reference texts, font families) of the test split."""
    paths, refs = [], []
    for line in (data / "test.tsv").read_text(encoding="utf-8").splitlines():
        path, text = line.split("\t", 1)
        paths.append(data / path)
        refs.append(text)
    families = [line.split("\t")[0] for line in
                (data / "test.fonts.tsv").read_text(encoding="utf-8").splitlines()]
    return paths, refs, families


def tesseract_one(path: Path, scale: int) -> str:
    """Tesseract's reading of one line image, scaled up ``scale`` times first."""
    from PIL import Image

    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if scale != 1:
            with Image.open(path) as img:
                big = img.resize((img.width * scale, img.height * scale),
                                 Image.Resampling.BICUBIC)
                source = Path(tmp) / "big.png"
                big.save(source)
        done = subprocess.run(["tesseract", str(source), "stdout", "--psm", "7", "-l", "eng"],
                              env=env, capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split())


def tesseract(paths: list[Path], scale: int, workers: int) -> tuple[list[str], float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        hyps = list(pool.map(lambda p: tesseract_one(p, scale), paths))
    return hyps, time.perf_counter() - start


def heedful_read(run: Path, paths: list[Path], threads: int) -> tuple[list[str], float]:
    listing = "\n".join(str(p) for p in paths) + "\n"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "heedful", "transcribe", str(run)],
                          input=listing, env=env, cwd=ROOT, check=True, capture_output=True,
                          text=True)
    return done.stdout.splitlines(), time.perf_counter() - start


def scores(refs: list[str], hyps: list[str], families: list[str]) -> dict[str, Any]:
    import jiwer

    def both(r: list[str], h: list[str]) -> dict[str, float]:
        h = [x if x.strip() else "<empty>" for x in h]  # jiwer refuses empty hypotheses
        return {"cer": round(jiwer.cer(r, h), 4), "wer": round(jiwer.wer(r, h), 4),
                "cer_ignoring_case": round(jiwer.cer([x.lower() for x in r],
                                                     [x.lower() for x in h]), 4),
                "exact_match": round(sum(a == b for a, b in zip(r, h, strict=True)) / len(r), 4)}

    by_family: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for ref, hyp, family in zip(refs, hyps, families, strict=True):
        by_family[family][0].append(ref)
        by_family[family][1].append(hyp)
    return {**both(refs, hyps),
            "by_family": {f: {"lines": len(r), **both(r, h)}
                          for f, (r, h) in sorted(by_family.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", default=str(ROOT / "runs" / "ocr-lines" / "main"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(DOCS / "ocr_lines.json"))
    args = parser.parse_args()
    data, run = Path(args.data), Path(args.run)
    if not (data / "test.fonts.tsv").exists():
        heedful("data", "text-lines", "--out", str(data), threads=args.threads)
    trained = None
    if not (run / "done").exists():
        start = time.monotonic()
        heedful("train", "--preset", "ocr-lines", f"data.dir={data}",
                f"train.max_minutes={args.minutes}", "--run-dir", str(run), "--no-progress",
                threads=args.threads)
        trained = round(time.monotonic() - start, 1)
        (run / "done").write_text("", encoding="utf-8")
    paths, refs, families = test_lines(data)
    hyps, seconds = heedful_read(run, paths, args.threads)
    report: dict[str, Any] = {
        "command": "python experiments/ocr_lines.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "threads": args.threads,
        "test_lines": len(paths), "train_minutes": args.minutes, "train_seconds": trained,
        "heedful": {**scores(refs, hyps, families),
                    "lines_per_s": round(len(paths) / seconds, 1)}}
    log = (run / "train.log").read_text(encoding="utf-8").splitlines()
    steps = [int(m.group(1)) for line in log if (m := re.search(r" step (\d+)", line))]
    report["heedful"]["updates"] = max(steps, default=0)
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    report["tesseract_version"] = version.stdout.splitlines()[0] if version.stdout else "?"
    for scale in (1, 3):
        t_hyps, t_seconds = tesseract(paths, scale, args.threads)
        report[f"tesseract_x{scale}"] = {**scores(refs, t_hyps, families),
                                         "lines_per_s": round(len(paths) / t_seconds, 1)}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: (v if not isinstance(v, dict) else
                          {m: v[m] for m in ("cer", "wer", "cer_ignoring_case", "lines_per_s")})
                      for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
