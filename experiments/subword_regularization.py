"""Subword regularization measured: the quickstart preset with and without
``tokenizer.sampling_alpha`` (BPE-dropout: the preset's tokenizer is BPE), several seeds, on
bible-es-en and Multi30k de->en, same budget in updates; test BLEU/chrF of every run, the
mean and spread over seeds.

    python experiments/subword_regularization.py --updates 400 --seeds 1 2 3 \\
        --parallel 2 --threads 1 -o docs/subword_regularization.json

Multi30k is read from ``--multi30k`` (default ../shared/data/multi30k: research license, never
vendored): train de->en, validation on val, test on test_2016_flickr (1,000 sentences).
A budget in updates (``train.max_steps``) is one that other work on the machine cannot shift,
so ``--parallel`` runs may share the cores. Test scores: ``heedful evaluate --json`` with each
run's decoding defaults (beam 5), sacreBLEU's default 13a tokenization on detokenized text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def corpus_args(name: str, multi30k: Path) -> tuple[list[str], list[str]]:
    """(training overrides, evaluate's test arguments) of a corpus."""
    if name == "bible-es-en":
        return [], ["--split", "test"]
    if name == "multi30k":
        m = multi30k
        return (["data.dataset=null", f"data.train.src={m / 'train.de.gz'}",
                 f"data.train.tgt={m / 'train.en.gz'}", f"data.dev.src={m / 'val.de.gz'}",
                 f"data.dev.tgt={m / 'val.en.gz'}"],
                ["--src", str(m / "test_2016_flickr.de.gz"),
                 "--ref", str(m / "test_2016_flickr.en.gz")])
    raise SystemExit(f"unknown corpus {name!r}")


def heedful(*argv: str) -> str:
    # one GEMM backend for every run: "auto" times both at the start and may pick either
    env = {**os.environ, "HEEDFUL_CPU_GEMM": os.environ.get("HEEDFUL_CPU_GEMM", "mkl")}
    done = subprocess.run([sys.executable, "-m", "heedful", *argv], check=True, cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, text=True)
    return done.stdout


def one_run(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    train_args, test_args = corpus_args(job["corpus"], args.multi30k)
    run_dir = args.work / f"{job['corpus']}-seed{job['seed']}-{job['setting']}-{args.updates}up"
    extra = [f"tokenizer.sampling_alpha={args.alpha}"] if job["setting"] == "sampled" else []
    train_s = None
    if not (run_dir / "checkpoints").is_dir():
        start = time.monotonic()
        heedful("train", "--preset", "quickstart", *train_args, *extra,
                f"train.seed={job['seed']}", f"train.max_steps={args.updates}",
                *([f"train.threads={args.threads}"] if args.threads else []),
                "--run-dir", str(run_dir), "--no-progress")
        train_s = round(time.monotonic() - start, 1)
    cached = run_dir / "test_scores.json"  # a rerun (more seeds, another corpus) reuses it
    if cached.exists():
        return {**job, **json.loads(cached.read_text())}
    scores = json.loads(heedful("evaluate", str(run_dir), *test_args, "--json"))
    out = {**job, "bleu": scores["bleu"], "chrf": scores["chrf"], "train_s": train_s}
    cached.write_text(json.dumps({k: out[k] for k in ("bleu", "chrf", "train_s")}))
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for corpus in sorted({r["corpus"] for r in runs}):
        row: dict[str, Any] = {}
        for setting in ("plain", "sampled"):
            bleu = [r["bleu"] for r in runs if r["corpus"] == corpus and r["setting"] == setting]
            row[setting] = {"bleu": bleu, "mean": round(statistics.mean(bleu), 2),
                            "spread": round(max(bleu) - min(bleu), 2)}
        gain = row["sampled"]["mean"] - row["plain"]["mean"]
        spread = max(row["plain"]["spread"], row["sampled"]["spread"])
        row["gain"], row["beats_spread"] = round(gain, 2), gain > spread
        table[corpus] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--corpora", nargs="+", default=["bible-es-en", "multi30k"])
    parser.add_argument("--multi30k", type=Path, default=ROOT.parent / "shared" / "data"
                        / "multi30k")
    parser.add_argument("--threads", type=int, help="train.threads of each run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "subword-reg")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = [{"corpus": c, "seed": s, "setting": setting} for c in args.corpora
            for s in args.seeds for setting in ("plain", "sampled")]
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(lambda job: one_run(job, args), jobs))
    report = {"updates": args.updates, "alpha": args.alpha, "seeds": args.seeds,
              "runs": runs, "summary": summary(runs)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
