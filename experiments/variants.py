"""Every attention variant (and the Transformer, and no attention) on bible-es-en, one budget.

    python experiments/variants.py train  [--minutes 15] [--jobs 2] [NAME ...]
    python experiments/variants.py report [--threads 2]           # -> docs/variants.{md,json}

``train`` trains each variant in ``runs/variants/NAME`` for the same wall-clock budget
(``train.max_minutes``, a total over sittings: re-running resumes unfinished runs and skips
finished ones), ``--jobs`` runs side by side with one torch thread each. The RNN variants
share the quickstart shape (bi-GRU 2x128 encoder, GRU 256 decoder, embeddings 256, no input
feeding, joint 4k BPE, tied embeddings); the Transformer is the peers' shape
(:func:`heedful.presets.peers_transformer`, 3+3 layers, feed-forward 1024) on the same
vocabulary and batches.

``report`` scores each run's best checkpoint on the full test set (beam 5) and measures
beam-5 sentences/s there (``--threads``, nothing else running), then writes the table. The
runs are reused by ``experiments/length_curve.py`` and ``experiments/alignment.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "variants"
DOCS = ROOT / "docs"

from heedful.nn.attention import attention_kinds, variant_options  # noqa: E402 (after ROOT)

RNN_VARIANTS = list(attention_kinds())  # every registered variant, and "none"
VARIANTS = [*RNN_VARIANTS, "transformer"]


def variant_config(name: str, minutes: float) -> Any:
    """The quickstart shape with one attention kind, or the small Transformer."""
    from heedful.config import config_from_dict
    from heedful.presets import get_preset, peers_transformer

    common_train = {"max_minutes": minutes, "threads": 1, "valid_every": 200, "log_every": 20,
                    # keep_last 4: checkpoint averaging (heedful average --last N) is measured
                    # on these runs; it changes nothing about training itself
                    "keep_last": 4, "batch_tokens": 6000, "seed": 1234}
    if name == "transformer":
        raw = peers_transformer().model_dump(mode="json", exclude_unset=True)
        raw["tokenizer"] = {"vocab_size": 4000}
        raw["data"] = {"dev_limit": 300}
        # A much shorter warm-up than the preset's 1000: on one CPU thread the budget buys a
        # few hundred updates. lr 0.3 with warm-up 100 peaks at 1.9e-3 (noam, d_model 256),
        # about the RNNs' 2e-3.
        raw["train"].update(common_train, lr=0.3, warmup_steps=100)
    else:
        raw = get_preset("quickstart").model_dump(mode="json", exclude_unset=True)
        raw["model"]["attention"] = name
        raw["model"].update(variant_options(name))  # the registry entry's options
        if name == "local":
            raw["model"]["local_window"] = 10  # D = 10, as in Luong et al. 2015
        raw["train"].update(common_train)
    raw["name"] = f"variant-{name}"
    return config_from_dict(raw, f"variant {name}")


def spent_seconds(run_dir: Path) -> float:
    """Training seconds recorded by the run's newest intact checkpoint (0 if none)."""
    from heedful.checkpoint import newest_intact

    ckpt, _ = newest_intact(run_dir) if (run_dir / "checkpoints").is_dir() else (None, [])
    if ckpt is None:
        return 0.0
    return float(json.loads((ckpt / "trainer_state.json").read_text())["train_seconds"])


def train_one(name: str, minutes: float) -> None:
    from heedful.training.trainer import train

    run_dir = RUNS / name
    if spent_seconds(run_dir) >= minutes * 60 - 1:
        print(f"{name}: budget already spent, skipping")
        return
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    result = train(variant_config(name, minutes), run_dir, resume=resume, progress=False)
    print(f"{name}: {result}")


def cmd_train(args: argparse.Namespace) -> None:
    names = args.names or VARIANTS

    def launch(name: str) -> int:
        log = RUNS / f"{name}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            cmd = [sys.executable, __file__, "train-one", name, "--minutes", str(args.minutes)]
            return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**_env(), "OMP_NUM_THREADS": "1"})

    with ThreadPoolExecutor(args.jobs) as pool:
        for name, rc in zip(names, pool.map(launch, names), strict=True):
            print(f"{name}: exit {rc}")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def median_train_rate(run_dir: Path) -> float:
    rates = [json.loads(line)["tok_per_s"]
             for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"tok_per_s"' in line]
    return statistics.median(rates)


def evaluate_run(name: str, threads: int) -> dict[str, Any]:
    """Test BLEU/chrF (beam 5, best checkpoint), beam-5 speed, size and training figures."""
    import torch

    from heedful.analysis.metrics import score_corpus
    from heedful.checkpoint import find_checkpoint
    from heedful.data import load_split
    from heedful.decoding.translator import Translator
    from heedful.nn.architectures import count_parameters

    torch.set_num_threads(threads)
    run_dir = RUNS / name
    translator = Translator.from_checkpoint(run_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None
    translator.translate(test.src[:16], beam_size=5)  # warm-up
    start = time.perf_counter()
    results = translator.translate(test.src, beam_size=5)
    seconds = time.perf_counter() - start
    hyps = [r.text for r in results]
    (run_dir / "test.beam5.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    scores = score_corpus(hyps, test.tgt)
    best = find_checkpoint(run_dir, "best")
    latest = json.loads((find_checkpoint(run_dir, "latest") / "trainer_state.json").read_text())
    return {
        "variant": name,
        "parameters": count_parameters(translator.model),
        "test_bleu": scores.bleu, "test_chrf": scores.chrf, "bleu_signature": scores.bleu_signature,
        "best_step": int(best.name.split("-")[1]), "steps": latest["step"],
        "train_minutes": round(latest["train_seconds"] / 60, 1),
        "train_tokens_per_s_1thread": round(median_train_rate(run_dir)),
        "beam5_sentences_per_s": round(len(hyps) / seconds, 1),
        "beam5_tokens_per_s": round(sum(r.num_tokens for r in results) / seconds),
        "decode_threads": threads,
    }


def cmd_report(args: argparse.Namespace) -> None:
    rows = []
    for name in args.names or VARIANTS:
        if not (RUNS / name / "checkpoints").is_dir():
            print(f"{name}: no run in {RUNS / name}; train it first", file=sys.stderr)
            continue
        cached = RUNS / name / "eval.json"
        if cached.is_file() and not args.refresh:
            row = json.loads(cached.read_text())
        else:
            row = evaluate_run(name, args.threads)
            cached.write_text(json.dumps(row, indent=1))
        print(json.dumps(row))
        rows.append(row)
    write_table(rows, args.minutes)


def write_table(rows: list[dict[str, Any]], minutes: float) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "variants.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Attention variants on bible-es-en",
        "",
        "Generated by `python experiments/variants.py report` (after `... train`). Each model "
        f"trained for the same {minutes:g}-minute wall-clock budget (validation included) on "
        "the 2-core CPU machine, one torch thread, two runs side by side; test BLEU/chrF with "
        "beam 5 on all 1,996 test verses (sacrebleu, best checkpoint by dev BLEU). Training "
        "tokens/s is the median over the run's logging windows (1 thread, real target "
        "tokens); beam-5 speed was measured alone with 2 threads.",
        "",
        "| variant | parameters | steps | test BLEU | test chrF | train tok/s (1 thread) "
        "| beam-5 sent/s | beam-5 tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['variant']}` | {r['parameters'] / 1e6:.2f}M | {r['steps']:,} | "
            f"{r['test_bleu']:.2f} | {r['test_chrf']:.2f} | "
            f"{r['train_tokens_per_s_1thread']:,} | {r['beam5_sentences_per_s']:.1f} | "
            f"{r['beam5_tokens_per_s']:,} |")
    if rows:
        lines += ["", f"BLEU signature: `{rows[0]['bleu_signature']}`", "",
                  "What the figures say, and which variant stays the default: README, section "
                  "\"Comparing attention variants\". Length curves: "
                  "[length_curve.md](length_curve.md); alignment: [alignment.md](alignment.md)."]
    (DOCS / "variants.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {DOCS / 'variants.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--jobs", type=int, default=2)
    p = sub.add_parser("train-one")
    p.add_argument("name", choices=VARIANTS)
    p.add_argument("--minutes", type=float, default=15)
    p = sub.add_parser("report")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--refresh", action="store_true", help="re-evaluate cached runs")
    args = parser.parse_args()
    unknown = [n for n in getattr(args, "names", []) if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.command == "train":
        cmd_train(args)
    elif args.command == "train-one":
        train_one(args.name, args.minutes)
    else:
        cmd_report(args)


if __name__ == "__main__":
    main()
