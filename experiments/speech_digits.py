"""Listening to spoken digit strings with and without attention, one budget each.

    python experiments/speech_digits.py [--minutes 12] [--threads 1] [--parallel]
        # -> docs/speech_digits.json
    python experiments/speech_digits.py --settings perturb perturb-none --parallel \
        --out docs/speech_digits_perturb.json  # speed + vocal-tract perturbation
    python experiments/speech_digits.py --settings lstm transformer --parallel \
        --out docs/speech_digits_encoders.json  # the encoder under the subsampling
    python experiments/speech_digits.py --settings perturb-30 --minutes 30 \
        --out docs/speech_digits_30.json  # perturbation at 30 CPU-minutes
    python experiments/speech_digits.py --settings attention-30 --minutes 30 \
        --out docs/speech_digits_30_plain.json  # the preset as it is, the same budget

Builds the corpus (``heedful data spoken-digits --from ../shared/data/fsdd --out
data/spoken-digits``) if it is missing, trains the ``speech-digits`` preset as it is
(scaled-dot attention) and with ``model.attention=none`` for the same wall-clock budget each
(``--parallel``: both at once, ``--threads`` each), then scores both on the 500 test
utterances of the held-out speaker (50 of every length 1-10 digits): WER, CER and exact match
per length, and the real-time factor of greedy decoding. A finished run is reused; delete
``runs/speech-digits/NAME`` to train it again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_digits import cpu_name, heedful  # the same subprocess helper and CPU name

ROOT = Path(__file__).resolve().parent.parent
FSDD = ROOT.parent / "shared" / "data" / "fsdd"
PERTURB = ["data.audio.speed_perturb=0.1", "data.audio.vtlp=0.1"]
TRANSFORMER = ["model.arch=transformer", "model.attention=multihead",
               "model.attention_heads=4", "model.embed_dim=192", "model.hidden_dim=192",
               "model.ff_dim=768", "model.encoder_layers=4", "model.decoder_layers=2",
               "train.lr=0.001", "train.warmup_steps=400"]


@dataclass(frozen=True)
class Task:
    """A speech corpus, its preset, the settings to compare, and where records go."""

    name: str
    preset: str
    data: Path
    build: tuple[str, ...]
    """``heedful data ...`` arguments that build the corpus into ``data``."""
    settings: dict[str, list[str]]
    default_settings: tuple[str, ...]
    out: Path
    minutes: float = 12.0
    description: str = ""

    @property
    def runs(self) -> Path:
        return ROOT / "runs" / self.preset


DIGITS = Task(
    "speech_digits", "speech-digits", ROOT / "data" / "spoken-digits",
    ("spoken-digits", "--from", str(FSDD)),
    {"attention": [], "none": ["model.attention=none"], "perturb": PERTURB,
     "perturb-none": [*PERTURB, "model.attention=none"],
     "lstm": ["model.rnn_type=lstm"], "transformer": TRANSFORMER,
     "perturb-30": PERTURB, "attention-30": []},  # their own run dirs for a longer budget
    ("attention", "none"), ROOT / "docs" / "speech_digits.json",
    description=__doc__.split("\n\n")[0])


def train(task: Task, name: str, minutes: float, threads: int) -> float | None:
    run = task.runs / name
    if (run / "done").exists():
        return None
    start = time.monotonic()
    heedful("train", "--preset", task.preset, f"data.dir={task.data.relative_to(ROOT)}",
            f"train.max_minutes={minutes}", f"train.threads={threads}", *task.settings[name],
            "--run-dir", str(run), "--resume", "--no-progress", threads=threads)
    (run / "done").write_text("finished\n")
    return time.monotonic() - start


def score(task: Task, name: str, threads: int) -> dict[str, Any]:
    report = json.loads(heedful("evaluate", str(task.runs / name), "--split", "test", "--json",
                                "--by-length", "--device", "cpu", threads=threads))
    metrics = [json.loads(line) for line in
               (task.runs / name / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if "dev_loss" in m][-1]
    return {**report, "updates": last["step"], "train_seconds": last["train_seconds"]}


def run_task(task: Task) -> int:
    ap = argparse.ArgumentParser(description=task.description)
    ap.add_argument("--minutes", type=float, default=task.minutes)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", action="store_true")
    ap.add_argument("--settings", nargs="+", choices=list(task.settings),
                    default=list(task.default_settings),
                    help="the settings to train and score (the preset's overrides)")
    ap.add_argument("--out", default=str(task.out))
    args = ap.parse_args()
    settings = args.settings
    if not (task.data / "test.tsv").exists():
        heedful("data", *task.build, "--out", str(task.data), threads=args.threads)
    with ThreadPoolExecutor(len(settings) if args.parallel else 1) as pool:
        runs = {name: pool.submit(train, task, name, args.minutes, args.threads)
                for name in settings}
        took = {name: run.result() for name, run in runs.items()}
    results = {name: score(task, name, args.threads) for name in settings}
    for name, seconds in took.items():
        results[name]["wall_seconds"] = None if seconds is None else round(seconds, 1)
    record = {"command": " ".join([f"python experiments/{task.name}.py", *sys.argv[1:]]),
              "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "minutes": args.minutes,
              "threads": args.threads, "parallel": args.parallel,
              "settings": {name: task.settings[name] for name in settings}, "results": results}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, res in results.items():
        print(f"{name}: WER {100 * res['wer']:.1f}%  CER {100 * res['cer']:.1f}%  exact "
              f"{100 * res['exact_match']:.1f}%  updates {res['updates']}  "
              f"RTF {res['real_time_factor']}")
        print("  WER by length: " + " ".join(
            f"{r['length']}:{100 * r['wer']:.0f}" for r in res["by_length"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_task(DIGITS))
