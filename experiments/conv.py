"""ConvS2S (``conv-small``) beside the quickstart RNN on bible-es-en, at the same budgets.

    python experiments/conv.py train  [--minutes 15 30] [NAME ...]  # one run at a time
    python experiments/conv.py train conv-small-bf16 --minutes 15   # conv-small in bf16
    python experiments/conv.py report [--threads 2] [NAME ...]      # -> docs/conv.{md,json}
    python experiments/conv.py optimizers [--minutes 5]             # -> docs/conv_optimizer.json

``train`` trains each model (``conv-small``, ``quickstart``) for each wall-clock budget
(``train.max_minutes``, validation included; a total over sittings: re-running resumes
unfinished runs and skips finished ones) in ``runs/conv/NAME-MINUTESmin``, one at a time with
``train.threads`` (default 2) — the figures mean something only with nothing else running.
A longer budget's run starts as a copy of the shorter one and resumes it: the budget changes
nothing but where training stops, and resume is exact, so the 30-minute run is the 15-minute
run continued (see :func:`continue_from`).

``report`` scores each run's best checkpoint on the full test set with beam 5 (BLEU, chrF,
sentences/s with ``--threads``), BLEU by source length (95% bootstrap intervals), and the
restricted AER of its attention: the extraction settings (layer included) are chosen on the
dev gold links, then every decoder layer is scored on test with the chosen method and shift.

``optimizers`` trains ``conv-small`` with Adam (the preset) and with the paper's Nesterov SGD
(lr 0.25, momentum 0.99, clip 0.1) for the same budget and compares dev BLEU over time and
greedy BLEU on the first 300 test verses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "conv"
DOCS = ROOT / "docs"
MODELS = ("conv-small", "quickstart", "conv-small-bf16")
# Runs that are a preset with train overrides: name -> (preset, overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "conv-small-bf16": ("conv-small", {"precision": "bf16"}),
}
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {},  # the preset's
    "nag": {"optimizer": "nag", "lr": 0.25, "momentum": 0.99, "clip_norm": 0.1,
            "warmup_steps": 0},
}


def run_config(name: str, minutes: float, threads: int, train: dict[str, Any] | None = None
               ) -> Any:
    from heedful.config import config_from_dict
    from heedful.presets import get_preset

    preset, overrides = VARIANTS.get(name, (name, {}))
    raw = get_preset(preset).model_dump(mode="json", exclude_unset=True)
    raw["train"] = {**raw.get("train", {}), "max_minutes": minutes, "threads": threads,
                    "seed": 1234, **overrides, **(train or {})}
    return config_from_dict(raw, f"{name}, {minutes:g} minutes")


def train_run(cfg: Any, run_dir: Path) -> None:
    from heedful.checkpoint import newest_intact
    from heedful.training.trainer import train

    ckpt, _ = newest_intact(run_dir) if (run_dir / "checkpoints").is_dir() else (None, [])
    if ckpt is not None:
        spent = json.loads((ckpt / "trainer_state.json").read_text())["train_seconds"]
        if spent >= cfg.train.max_minutes * 60 - 1:
            print(f"{run_dir.name}: budget already spent, skipping")
            return
    print(f"{run_dir.name}: {train(cfg, run_dir, resume=ckpt is not None, progress=False)}")


def continue_from(shorter: Path, run_dir: Path) -> None:
    """Start the longer budget's run as a copy of the finished shorter one, to be resumed.

    Nothing in the training depends on the budget except where it stops, and resume is exact
    (same batches, dropout masks and learning rates), so the copy continued to M minutes is
    the run a fresh M-minute training would be, for half the machine time.
    """
    import shutil

    shutil.copytree(shorter, run_dir, ignore=shutil.ignore_patterns("eval.json"))
    print(f"{run_dir.name}: continuing {shorter.name}")


def median_train_rate(run_dir: Path) -> float:
    rates = [json.loads(line)["tok_per_s"]
             for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"tok_per_s"' in line]
    return statistics.median(rates)


def alignment_figures(translator: Any) -> dict[str, Any]:
    """Settings tuned on dev; restricted AER on test for them and for every layer."""
    from heedful.analysis.attention_alignment import pair_attention, tune
    from heedful.analysis.word_alignment import alignment_scores, read_alignments
    from heedful.data import read_lines
    from heedful.datasets import dataset_file, dataset_split

    def gold(split: str) -> tuple[list[str], list[str], list[Any], list[Any]]:
        src, tgt = dataset_split("bible-es-en", split)
        return (read_lines(src), read_lines(tgt),
                read_alignments(dataset_file("bible-es-en", f"{split}.align.sure")),
                read_alignments(dataset_file("bible-es-en", f"{split}.align")))

    dev_src, dev_tgt, dev_sure, dev_possible = gold("dev")
    settings, _, _ = tune(pair_attention(translator, dev_src, dev_tgt), dev_sure, dev_possible)
    test_src, test_tgt, sure, possible = gold("test")
    pairs = pair_attention(translator, test_src, test_tgt)
    layers = pairs[0].attention.shape[1]
    per_layer = {}
    for layer in [None, *range(layers)]:
        s = replace(settings, layer=layer)
        scores = alignment_scores([p.links(s) for p in pairs], sure, possible)
        per_layer["mean" if layer is None else str(layer)] = round(scores.aer_restricted, 4)
    chosen = alignment_scores([p.links(settings) for p in pairs], sure, possible)
    return {"align_settings": settings.describe(),
            "test_aer_restricted": round(chosen.aer_restricted, 4),
            "test_aer_restricted_by_layer": per_layer}


def evaluate_run(run_dir: Path, threads: int) -> dict[str, Any]:
    import torch

    from heedful.analysis.by_length import DEFAULT_EDGES, by_length
    from heedful.analysis.metrics import score_corpus
    from heedful.checkpoint import find_checkpoint
    from heedful.data import load_split
    from heedful.decoding.translator import Translator
    from heedful.nn.architectures import count_parameters

    torch.set_num_threads(threads)
    translator = Translator.from_checkpoint(run_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None
    translator.translate(test.src[:16], beam_size=5)  # warm-up
    start = time.perf_counter()
    results = translator.translate(test.src, beam_size=5)
    seconds = time.perf_counter() - start
    hyps = [r.text for r in results]
    scores = score_corpus(hyps, test.tgt)
    latest = json.loads((find_checkpoint(run_dir, "latest") / "trainer_state.json").read_text())
    buckets = by_length(test.src, hyps, test.tgt, DEFAULT_EDGES, samples=1000)
    return {
        "run": run_dir.name, "arch": translator.config.model.arch,
        "parameters": count_parameters(translator.model),
        "test_bleu": scores.bleu, "test_chrf": scores.chrf, "bleu_signature": scores.bleu_signature,
        "steps": latest["step"], "train_minutes": round(latest["train_seconds"] / 60, 1),
        "train_tokens_per_s": round(median_train_rate(run_dir)),
        "beam5_sentences_per_s": round(len(hyps) / seconds, 1), "decode_threads": threads,
        "bleu_by_length": {b.label: None if b.bleu is None else round(b.bleu, 2)
                           for b in buckets},
        **alignment_figures(translator),
    }


def cmd_report(args: argparse.Namespace) -> None:
    # rows already in docs/conv.json stay unless this checkout has the run to re-evaluate
    published = DOCS / "conv.json"
    kept = {r["run"]: r for r in json.loads(published.read_text())} if published.is_file() else {}
    rows = []
    for run_dir in sorted(RUNS.glob("*min")):
        if args.names and not any(run_dir.name.startswith(n) for n in args.names):
            continue
        cached = run_dir / "eval.json"
        if not cached.is_file() or args.refresh:
            cached.write_text(json.dumps(evaluate_run(run_dir, args.threads), indent=1))
        rows.append(json.loads(cached.read_text()))
        print(json.dumps(rows[-1]))
    fresh = {r["run"] for r in rows}
    rows = sorted(rows + [r for name, r in kept.items() if name not in fresh],
                  key=lambda r: r["run"])
    DOCS.mkdir(exist_ok=True)
    (DOCS / "conv.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# ConvS2S beside the quickstart RNN on bible-es-en",
        "",
        "Generated by `python experiments/conv.py report` (after `... train`): each model "
        "trained alone for the wall-clock budget in its name (validation included, "
        f"`train.threads` 2); test BLEU/chrF with beam 5 on all test verses (best checkpoint "
        "by dev BLEU); training tokens/s is the median over the logging windows (real target "
        f"tokens); beam-5 speed measured alone with {args.threads} threads. Restricted AER: "
        "settings chosen on the dev gold links, scored on test.",
        "",
        "| run | arch | parameters | steps | test BLEU | test chrF | train tok/s | beam-5 sent/s "
        "| restricted AER (chosen settings) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['run']}` | {r['arch']} | {r['parameters'] / 1e6:.2f}M | "
                     f"{r['steps']:,} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} | "
                     f"{r['train_tokens_per_s']:,} | {r['beam5_sentences_per_s']:.1f} | "
                     f"{r['test_aer_restricted']:.3f} ({r['align_settings']}) |")
    if rows:
        labels = list(rows[0]["bleu_by_length"])
        lines += ["", "BLEU by source length (words):", "",
                  "| run | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for r in rows:
            lines.append(f"| `{r['run']}` | " + " | ".join(
                "-" if v is None else f"{v:.1f}" for v in r["bleu_by_length"].values()) + " |")
        lines += ["", "Restricted AER on test by decoder layer (chosen method and shift):", ""]
        for r in rows:
            cells = ", ".join(f"{k}: {v:.3f}" for k, v in r["test_aer_restricted_by_layer"].items())
            lines.append(f"* `{r['run']}`: {cells}")
        lines += ["", f"BLEU signature: `{rows[0]['bleu_signature']}`"]
    (DOCS / "conv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def cmd_optimizers(args: argparse.Namespace) -> None:
    from heedful.analysis.metrics import score_corpus
    from heedful.data import load_split
    from heedful.decoding.translator import Translator

    rows = []
    for name, train in OPTIMIZERS.items():
        run_dir = RUNS / "optimizers" / f"{name}-{args.minutes:g}min"
        train_run(run_config("conv-small", args.minutes, args.threads, train), run_dir)
        translator = Translator.from_checkpoint(run_dir)
        test = load_split(translator.config.data, "test")
        assert test is not None
        hyps = translator.translate_lines(test.src[:300], beam_size=1)
        curve = [(r["step"], round(r["dev_bleu"], 2)) for r in map(
            json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "dev_bleu" in r]
        rows.append({"optimizer": name, "train": train or "preset",
                     "dev_bleu_by_step": curve, "tokens_per_s": round(median_train_rate(run_dir)),
                     "test300_greedy_bleu": round(score_corpus(hyps, test.tgt[:300]).bleu, 2)})
        print(json.dumps(rows[-1]))
    (DOCS / "conv_optimizer.json").write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(MODELS)}")
    p.add_argument("--minutes", type=float, nargs="+", default=[15, 30])
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("report")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--refresh", action="store_true", help="re-evaluate cached runs")
    p = sub.add_parser("optimizers")
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.command == "train" and (unknown := set(args.names) - set(MODELS)):
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(MODELS)}")
    if args.command == "train":
        budgets = sorted(args.minutes)
        for shorter, minutes in zip([None, *budgets], budgets, strict=False):
            for name in args.names or MODELS:
                run_dir = RUNS / f"{name}-{minutes:g}min"
                if shorter is not None and not run_dir.exists():
                    continue_from(RUNS / f"{name}-{shorter:g}min", run_dir)
                train_run(run_config(name, minutes, args.threads), run_dir)
    elif args.command == "report":
        cmd_report(args)
    else:
        cmd_optimizers(args)


if __name__ == "__main__":
    main()
