"""heedful vs Joey NMT and OpenNMT-py: training throughput on the same machine, in one run.

    benchmarks/peers/setup_venvs.sh                 # once: the peers' venvs (~4 min)
    python benchmarks/peers_compare.py --steps 100  # peers then heedful, then the ratios

What runs, in order, each alone on the machine (the harness waits for quiet CPUs):
``benchmarks/peers/run_peers.sh data throughput`` (Joey NMT 2.3.0 and OpenNMT-py 3.5.1 train
the rnn and transformer configurations for WARMUP + STEPS updates at 4,096-token batches with
2 torch threads; their own CLIs, timed per optimizer step), then ``heedful bench`` (the same
two configurations, the same warm-up and steps, each in a fresh process). Printed: one JSON
object and a table with target tokens/s (median per-step and window), peak RSS, and the
ratios heedful / peer. ``--peers-results DIR`` reuses an earlier peers run instead. ``--bf16``
adds heedful with bf16 autocast (``--precision bf16``; the peers train in fp32 on a CPU) as
extra columns beside the like-for-like fp32 ones.
Writes docs/peers.md and docs/peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from peers_report import HARNESS, MODELS, PEERS, write_report


def run_peers(steps: int, warmup: int, threads: int, env: dict[str, str]) -> Path:
    env = {**env, "MEASURE_STEPS": str(steps), "WARMUP_STEPS": str(warmup),
           "THREADS": str(threads)}
    subprocess.run([str(HARNESS / "run_peers.sh"), "data", "throughput"], env=env, check=True)
    work = Path(env.get("PEERS_WORK") or Path(env.get("PEERS_VENVS", "/tmp/peers")) / "work")
    return work / "results"


def run_heedful(steps: int, warmup: int, threads: int, precision: str = "fp32"
                ) -> dict[str, dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "heedful", "bench", "--json", "--steps",
                           str(steps), "--warmup", str(warmup), "--threads", str(threads),
                           "--precision", precision],
                          capture_output=True, text=True, check=True)
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    return {r["config"]: r for r in reports}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers-results", help="reuse the JSON records of an earlier peers run")
    ap.add_argument("--heedful-only", action="store_true", help="(with --peers-results)")
    ap.add_argument("--bf16", action="store_true",
                    help="also measure heedful with bf16 autocast (extra columns)")
    args = ap.parse_args()
    results = (Path(args.peers_results) if args.peers_results
               else run_peers(args.steps, args.warmup, args.threads, dict(os.environ)))
    ours = run_heedful(args.steps, args.warmup, args.threads)
    ours_bf16 = run_heedful(args.steps, args.warmup, args.threads, "bf16") if args.bf16 else {}
    rows = []
    for model in MODELS:
        h = ours[model]
        row: dict[str, object] = {
            "model": model, "heedful_params": h["parameters"],
            "heedful_tok_s_median": h["train_tokens_per_s_median"],
            "heedful_tok_s_window": h["train_tokens_per_s_window"],
            "heedful_tok_per_step": h["train_target_tokens_per_step"],
            "heedful_peak_rss_mb": h["train_peak_rss_mb"]}
        if model in ours_bf16:
            row["heedful_bf16_tok_s_median"] = ours_bf16[model]["train_tokens_per_s_median"]
            row["heedful_bf16_peak_rss_mb"] = ours_bf16[model]["train_peak_rss_mb"]
        for peer in PEERS:
            path = results / f"train-{peer}-{model}-tput.json"
            if not path.exists():
                row[f"{peer}_missing"] = str(path)
                continue
            p = json.loads(path.read_text())
            row.update({
                f"{peer}_tok_s_median": round(float(p["median_step_tok_per_s"])),
                f"{peer}_tok_s_window": round(float(p["tok_per_s"])),
                f"{peer}_tok_per_step": p.get("tokens_per_step"),
                f"{peer}_peak_rss_mb": round(float(p["peak_rss_mb"])),
                f"{peer}_cpu_pressure": p.get("cpu_pressure_share"),
                f"ratio_vs_{peer}_median": round(float(h["train_tokens_per_s_median"])  # type: ignore[arg-type]
                                                 / float(p["median_step_tok_per_s"]), 2),
                f"ratio_vs_{peer}_window": round(float(h["train_tokens_per_s_window"])  # type: ignore[arg-type]
                                                 / float(p["tok_per_s"]), 2),
                f"rss_vs_{peer}": round(float(h["train_peak_rss_mb"])  # type: ignore[arg-type]
                                        / float(p["peak_rss_mb"]), 2)})
            if "heedful_bf16_tok_s_median" in row:
                row[f"bf16_ratio_vs_{peer}_median"] = round(
                    float(row["heedful_bf16_tok_s_median"])  # type: ignore[arg-type]
                    / float(p["median_step_tok_per_s"]), 2)
        rows.append(row)
    report = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "rows": rows}
    if args.bf16:
        lines_bf16 = ["", "heedful with bf16 autocast (`--bf16`; the peers stay fp32):", "",
                      "| model | heedful bf16 tok/s (median) | ÷ Joey NMT | ÷ OpenNMT-py | "
                      "peak RSS MB |", "|---|---:|---:|---:|---:|"]
        for r in rows:
            lines_bf16.append(
                f"| {r['model']} | {r.get('heedful_bf16_tok_s_median', '–'):,} | "
                f"{r.get('bf16_ratio_vs_joey_median', '–')}× | "
                f"{r.get('bf16_ratio_vs_onmt_median', '–')}× | "
                f"{r.get('heedful_bf16_peak_rss_mb', '–'):,} |")
    else:
        lines_bf16 = []
    lines = ["| model | heedful tok/s (median / window) | Joey NMT | OpenNMT-py | "
             "heedful ÷ Joey | heedful ÷ OpenNMT-py | peak RSS MB heedful / Joey / OpenNMT-py |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['heedful_tok_s_median']:,} / {r['heedful_tok_s_window']:,} | "
            f"{r.get('joey_tok_s_median', '–'):,} / {r.get('joey_tok_s_window', '–'):,} | "
            f"{r.get('onmt_tok_s_median', '–'):,} / {r.get('onmt_tok_s_window', '–'):,} | "
            f"{r.get('ratio_vs_joey_median', '–')}× | {r.get('ratio_vs_onmt_median', '–')}× | "
            f"{r['heedful_peak_rss_mb']:,} / {r.get('joey_peak_rss_mb', '–'):,} / "
            f"{r.get('onmt_peak_rss_mb', '–'):,} |")
    write_report("peers",
                 f"Training throughput, target tokens/s, {args.threads} torch threads, updates "
                 f"{args.warmup + 1}–{args.warmup + args.steps} at 4,096-token batches "
                 "(`python benchmarks/peers_compare.py`).", lines + lines_bf16, report)

if __name__ == "__main__":
    main()
