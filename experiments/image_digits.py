"""Reading handwritten digit strings with and without attention, one budget each.

    python experiments/image_digits.py [--minutes 15] [--threads 2] [--parallel]
        # -> docs/image_digits.json, docs/digits_by_length.png,
        #    docs/digits_attention.png
    python experiments/image_digits.py --settings embeddings embeddings-no-augment \
        none-embeddings --parallel --out docs/image_digits_variants.json  # the variants

Builds the corpus (``heedful data digits --out data/digits``) if it is missing, trains the
``image-digits`` preset as it is (scaled-dot attention) and with ``model.attention=none`` (the
decoder sees the image only through the encoder's final state, as Sutskever et al.'s
encoder-decoder sees a sentence) for the same wall-clock budget each (``train.max_minutes``,
one run after the other, ``--threads`` torch threads, nothing else on the machine; with
``--parallel`` both at once, so each has ``--threads`` of the cores to itself), then
scores both on the 1,200 test strings (100 of every length 1-12, written with digit images
no training string used): exact match and CER per length, images decoded per second (greedy,
``--threads``), and an attention overlay of one test string. A run that has finished is
reused; delete ``runs/image-digits/NAME`` to train it again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "image-digits"
DATA = ROOT / "data" / "digits"
DOCS = ROOT / "docs"
SETTINGS = {"attention": [], "none": ["model.attention=none"],
            # the comparisons: position embeddings instead of the preset's row encoder, with
            # and without the preset's image distortions, and without attention
            "embeddings": ["model.image_position=embeddings"],
            "embeddings-no-augment": ["model.image_position=embeddings", "data.augment=null"],
            "none-embeddings": ["model.image_position=embeddings", "model.attention=none"]}
DEFAULT_SETTINGS = ["attention", "none"]


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


def train(name: str, minutes: float, threads: int) -> float | None:
    """Train one setting unless its run has finished; the seconds it took (None: reused)."""
    run = RUNS / name
    if (run / "checkpoints" / "best").exists() and (run / "done").exists():
        return None
    start = time.monotonic()
    heedful("train", "--preset", "image-digits", f"data.dir={DATA.relative_to(ROOT)}",
            f"train.max_minutes={minutes}", f"train.threads={threads}", *SETTINGS[name],
            "--run-dir", str(run), "--resume", threads=threads)
    (run / "done").write_text("finished\n")
    return time.monotonic() - start


def score(name: str, threads: int) -> dict[str, Any]:
    report = json.loads(heedful("evaluate", str(RUNS / name), "--split", "test", "--json",
                                "--by-length", "--device", "cpu", threads=threads))
    metrics = [json.loads(line) for line in
               (RUNS / name / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if "dev_loss" in m][-1]
    return {**report, "updates": last["step"], "train_seconds": last["train_seconds"]}


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    from heedful.analysis.plots import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for name, res in results.items():
        rows = res["by_length"]
        lengths = [r["length"] for r in rows]
        left.plot(lengths, [100 * r["exact_match"] for r in rows], marker="o", label=name)
        right.plot(lengths, [100 * r["cer"] for r in rows], marker="o", label=name)
    left.set(xlabel="digits in the string", ylabel="exact match (%)", ylim=(0, 101),
             title="whole string right")
    right.set(xlabel="digits in the string", ylabel="CER (%)", title="character error rate")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", action="store_true",
                    help="train the settings at once (each with --threads threads)")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=DEFAULT_SETTINGS,
                    help="the settings to train and score (the preset's overrides)")
    ap.add_argument("--out", default=str(DOCS / "image_digits.json"),
                    help="where the JSON record goes")
    args = ap.parse_args()
    if not (DATA / "test.tsv").exists():
        heedful("data", "digits", "--out", str(DATA), threads=args.threads)
    settings = args.settings
    with ThreadPoolExecutor(len(settings) if args.parallel else 1) as pool:
        runs = {name: pool.submit(train, name, args.minutes, args.threads) for name in settings}
        took = {name: run.result() for name, run in runs.items()}
    results = {name: score(name, args.threads) for name in settings}
    for name, seconds in took.items():
        results[name]["wall_seconds"] = None if seconds is None else round(seconds, 1)
    if settings == DEFAULT_SETTINGS:
        sample = str(DATA / "images" / "test" / "000000.png")
        heedful("attention", str(RUNS / "attention"), sample, "-o",
                str(DOCS / "digits_attention.png"), "--device", "cpu",
                threads=args.threads)
        plot(results, DOCS / "digits_by_length.png")
    record = {"command": " ".join(["python experiments/image_digits.py", *sys.argv[1:]]),
              "settings": {name: SETTINGS[name] for name in settings},
              "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
              "minutes": args.minutes, "threads": args.threads, "parallel": args.parallel,
              "results": results}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, res in results.items():
        print(f"{name}: exact {100 * res['exact_match']:.1f}%  CER {100 * res['cer']:.2f}%  "
              f"updates {res['updates']}  images/s {res['images_per_s']}")
        print("  by length (exact %): " + " ".join(
            f"{r['length']}:{100 * r['exact_match']:.0f}" for r in res["by_length"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
