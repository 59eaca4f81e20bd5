"""Same-run speed comparison of two heedful trees: ``heedful bench`` alternated in a balanced
order, so that neither version always runs first.

Each round runs A then B, the next B then A (ABBA...), every measurement in a fresh process,
so a machine on which "the second process of a pair is slower" (as some are) penalises both
versions equally. Prints one JSON object: per figure, every round's value for each tree, the
medians, and new / old of the medians.

    python benchmarks/compare_versions.py --old /tmp/old-checkout --rounds 6 \
        --transformer-model RUN_DIR --rnn-model bible-es-en

``--old`` and ``--new`` are checkouts (``git worktree add /tmp/old REV``); each is run as
``PYTHONPATH=TREE python -m heedful bench ...`` with the interpreter running this script, so
both see the same torch and the same libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRAINING_FIGURES = ("train_tokens_per_s_median",)
DECODING_FIGURES = ("beam5_sentences_per_s", "greedy_sentences_per_s")


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (benchmarks name the CPU they ran on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench(tree: Path, argv: list[str], env_extra: dict[str, str], prefix: list[str]
          ) -> dict[str, Any]:
    """One ``heedful bench --json`` in a fresh process against ``tree``; its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(tree), **env_extra}
    out = subprocess.run([*prefix, sys.executable, "-m", "heedful", "bench", *argv, "--json"],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"heedful bench failed in {tree} (exit {out.returncode}):\n"
                         f"{out.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def jobs(args: argparse.Namespace) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(label, bench arguments, figures to read) for every measurement of one round."""
    out: list[tuple[str, list[str], tuple[str, ...]]] = []
    for name in args.only:
        out.append((f"{name} training",
                    ["--only", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
                     "--threads", str(args.threads), "--precision", args.precision],
                    TRAINING_FIGURES))
        model = getattr(args, f"{name}_model")
        if model:
            argv = ["--only", name, "--skip-training", f"--{name}-model", model,
                    "--threads", str(args.threads)]
            if args.test_limit:
                argv += ["--test-limit", str(args.test_limit)]
            out.append((f"{name} decoding", argv, DECODING_FIGURES))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout under test (default: this one)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (even: balanced order)")
    parser.add_argument("--only", choices=["rnn", "transformer"], action="append")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="training arithmetic of both trees")
    parser.add_argument("--rnn-model", help="trained run for the rnn decoding figures")
    parser.add_argument("--transformer-model", help="trained run for the transformer ones")
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--prefix", default="",
                        help="command put before each measurement (e.g. 'taskset -c 0,1')")
    parser.add_argument("--gemm", default="mkl",
                        help="HEEDFUL_CPU_GEMM for both trees (default mkl: one library)")
    args = parser.parse_args()
    args.only = args.only or ["transformer", "rnn"]
    env_extra = {"HEEDFUL_CPU_GEMM": args.gemm}
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    values: dict[str, dict[str, list[float]]] = {}
    started = time.time()
    for round_index in range(args.rounds):
        order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
        for label, argv, figures in jobs(args):
            for which in order:
                report = bench(trees[which], argv, env_extra, shlex.split(args.prefix))
                for figure in figures:
                    key = f"{label}: {figure}"
                    values.setdefault(key, {"old": [], "new": []})[which].append(
                        float(report[figure]))
                print(f"round {round_index + 1} {label} {which}: "
                      + ", ".join(f"{f}={report[f]}" for f in figures),
                      file=sys.stderr, flush=True)
    summary = {}
    for key, per_tree in values.items():
        old, new = statistics.median(per_tree["old"]), statistics.median(per_tree["new"])
        summary[key] = {"old": per_tree["old"], "new": per_tree["new"], "old_median": old,
                        "new_median": new, "new_over_old": round(new / old, 4)}
    print(json.dumps({"cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds,
                      "order": "ABBA (old first in odd rounds, new first in even rounds)",
                      "gemm": args.gemm, "precision": args.precision, "steps": args.steps,
                      "warmup": args.warmup,
                      "test_limit": args.test_limit, "old": str(trees["old"]),
                      "new": str(trees["new"]), "minutes": round((time.time() - started) / 60, 1),
                      "figures": summary}, indent=1))


if __name__ == "__main__":
    main()
