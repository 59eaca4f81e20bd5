"""heedful vs Joey NMT and OpenNMT-py: greedy and beam-5 decoding of trained models, one run.

    # train the peers (their harness) and heedful on the same configurations first, e.g.
    THREADS=1 PEERS=onmt MODELS=rnn BUDGET_STEPS=900 benchmarks/peers/run_peers.sh train
    heedful train --preset bench-rnn train.max_steps=900 --run-dir runs/bench-rnn
    python benchmarks/peers_decode.py --rnn-model runs/bench-rnn \\
        --transformer-model runs/bench-transformer --test-slice 500

What runs, in order, each alone on the machine: ``benchmarks/peers/run_peers.sh decode``
(each peer's own translate command on the first ``--test-slice`` test sentences, batch 64,
greedy then beam 5, outputs capped at ``--max-out`` pieces, timed by the peer's own timer;
checkpoints: the peers' ``train`` stage runs) and then ``heedful bench --skip-training`` with
the given runs on the same sentences (batch 64, the peers' beam stopping rule). Printed: one
JSON object and a table of sentences/s, output tokens/s (subwords written, EOS not counted),
BLEU (sacrebleu 13a on detokenized output, as the harness scores the peers) and the ratios
heedful / peer. ``--peers-results DIR`` reuses an earlier peers run. Writes
docs/peers_decode.md and .json (docs/peers_decode_int8.* with ``--quantize int8``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from peers_report import HARNESS, MODELS, PEERS, write_report


def run_peers(test_slice: int, max_out: int, threads: int, env: dict[str, str],
              skip: list[str], models: list[str]) -> Path:
    env = {**env, "TEST_SLICE": str(test_slice), "MAX_OUT": str(max_out), "DEV_BEAM": "",
           "BEAMS": "1 5", "THREADS": str(threads)}
    for peer in PEERS:
        for model in models:
            if f"{peer}-{model}" not in skip:
                subprocess.run([str(HARNESS / "run_peers.sh"), "data", "decode"],
                               env={**env, "PEERS": peer, "MODELS": model}, check=True)
    work = Path(env.get("PEERS_WORK") or Path(env.get("PEERS_VENVS", "/tmp/peers")) / "work")
    return work / "results"


def run_heedful(models: dict[str, str], test_slice: int, threads: int,
                quantize: str | None) -> dict[str, dict[str, Any]]:
    reports = {}
    for name, run in models.items():
        argv = [sys.executable, "-m", "heedful", "bench", "--json", "--only", name,
                "--skip-training", f"--{name}-model", run, "--threads", str(threads),
                "--beam-stop", "top_finished"]
        argv += ["--test-limit", str(test_slice)] if test_slice else []
        argv += ["--quantize", quantize] if quantize else []
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        reports[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return reports


def training_record(run: str) -> dict[str, Any]:
    """Updates a heedful run trained for (its metrics.jsonl)."""
    steps = 0
    path = Path(run) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            steps = max(steps, int(json.loads(line).get("step", 0)))
    return {"steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rnn-model", help="heedful run trained with bench-rnn")
    ap.add_argument("--transformer-model", help="heedful run trained with bench-transformer")
    ap.add_argument("--only", choices=MODELS, help="one model (default both)")
    ap.add_argument("--report", help="write docs/REPORT.md and .json (default peers_decode, "
                                     "or peers_decode_int8 with --quantize)")
    ap.add_argument("--test-slice", type=int, default=500, help="first N test sentences")
    ap.add_argument("--max-out", type=int, default=200, help="the peers' output cap")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantize", choices=["int8"], help="heedful decodes with int8 weights")
    ap.add_argument("--peers-results", help="reuse the JSON records of an earlier peers run")
    ap.add_argument("--skip", action="append", default=[], metavar="PEER-MODEL",
                    help="leave one peer model out, e.g. joey-transformer (repeatable)")
    args = ap.parse_args()
    models = [args.only] if args.only else list(MODELS)
    runs = {m: getattr(args, f"{m}_model") for m in models}
    missing = [f"--{m}-model" for m, run in runs.items() if not run]
    if missing:
        ap.error(f"{', '.join(missing)} required (or --only the other model)")
    results = (Path(args.peers_results) if args.peers_results
               else run_peers(args.test_slice, args.max_out, args.threads, dict(os.environ),
                              args.skip, models))
    ours = run_heedful(runs, args.test_slice, args.threads, args.quantize)
    name = f"test{args.test_slice}" if args.test_slice else "test"
    rows = []
    for model in models:
        h = ours[model]
        for beam, key in ((1, "greedy"), (5, "beam5")):
            row: dict[str, Any] = {
                "model": model, "beam": beam,
                "heedful_sent_s": h[f"{key}_sentences_per_s"],
                "heedful_tok_s": h[f"{key}_tokens_per_s"], "heedful_bleu": h[f"{key}_bleu"],
                # one process decodes greedy then beam 5: its peak covers both
                "heedful_peak_rss_mb": h.get("decode_peak_rss_mb"),
                "heedful_training": training_record(runs[model])}
            for peer in PEERS:
                path = results / f"decode-{peer}-{model}-{name}-beam{beam}.json"
                if not path.exists():
                    row[f"{peer}_missing"] = str(path)
                    continue
                p = json.loads(path.read_text())
                if f"{peer}-{model}" in args.skip or args.peers_results:
                    row[f"{peer}_reused"] = True  # an earlier run's record, not decoded now
                row.update({f"{peer}_sent_s": p.get("sent_per_s"),
                            f"{peer}_tok_s": p.get("tok_per_s"), f"{peer}_bleu": p.get("bleu"),
                            f"{peer}_peak_rss_mb": p.get("peak_rss_mb"),
                            f"{peer}_model_from": p.get("model_from")})
                if p.get("sent_per_s") and p.get("tok_per_s"):
                    row[f"sent_ratio_vs_{peer}"] = round(h[f"{key}_sentences_per_s"]
                                                         / float(p["sent_per_s"]), 2)
                    row[f"tok_ratio_vs_{peer}"] = round(h[f"{key}_tokens_per_s"]
                                                        / float(p["tok_per_s"]), 2)
                train = results / f"train-{peer}-{model}-budget.json"
                if train.exists():
                    t = json.loads(train.read_text())
                    row[f"{peer}_training"] = {"steps": t.get("steps_done"),
                                               "tokens_seen": t.get("train_tokens_total")}
            rows.append(row)
    report = {"test_slice": args.test_slice, "max_out": args.max_out, "threads": args.threads,
              "heedful_quantize": args.quantize, "rows": rows}

    def cell(r: dict[str, Any], peer: str) -> str:
        if f"{peer}_sent_s" not in r:
            return "–"
        reused = " (reused)" if r.get(f"{peer}_reused") else ""
        return f"{r[f'{peer}_sent_s']} / {r[f'{peer}_tok_s']:,} / {r[f'{peer}_bleu']}{reused}"

    lines = ["| model | beam | heedful sent/s / tok/s / BLEU | Joey NMT | OpenNMT-py | "
             "heedful ÷ Joey (sent/s, tok/s) | heedful ÷ OpenNMT-py (sent/s, tok/s) | "
             "peak RSS MB heedful / Joey / OpenNMT-py |",
             "|---|---:|---|---|---|---:|---:|---|"]

    def rss(r: dict[str, Any], who: str) -> str:
        value = r.get(f"{who}_peak_rss_mb")
        return "–" if value is None else f"{round(float(value)):,}"

    for r in rows:
        lines.append(
            f"| {r['model']} | {r['beam']} | {r['heedful_sent_s']} / {r['heedful_tok_s']:,} / "
            f"{r['heedful_bleu']} | {cell(r, 'joey')} | {cell(r, 'onmt')} | "
            f"{r.get('sent_ratio_vs_joey', '–')}×, {r.get('tok_ratio_vs_joey', '–')}× | "
            f"{r.get('sent_ratio_vs_onmt', '–')}×, {r.get('tok_ratio_vs_onmt', '–')}× | "
            f"{rss(r, 'heedful')} / {rss(r, 'joey')} / {rss(r, 'onmt')} |")
    write_report(args.report or ("peers_decode_int8" if args.quantize else "peers_decode"),
                 f"Decoding, first {args.test_slice or 'all'} bible-es-en test sentences, "
                 f"batch 64, {args.threads} torch threads, peers capped at {args.max_out} "
                 "pieces (`python benchmarks/peers_decode.py`). Peak RSS: each peer decoding "
                 "run is its own process; heedful's one process decodes greedy, then beam 5.",
                 lines, report)

if __name__ == "__main__":
    main()
