"""Test BLEU against wall-clock minutes: the quickstart RNN, the Transformer and ConvS2S on
bible-es-en and on Multi30k (de->en, en->de), each alone on the machine with 2 threads
(``HEEDFUL_CPU_GEMM=mkl`` unless set).

    python experiments/cpu_budget.py train [MODEL ...] [--corpus C] [--minutes 15,30,60]
    python experiments/cpu_budget.py probe [--minutes 5] [VARIANT ...]   # the recipe search
    python experiments/cpu_budget.py report         # -> docs/cpu_budget.{json,md,png}

Models: ``rnn`` (preset ``quickstart``), ``transformer`` (``transformer-small``), ``conv``
(``conv-small``). Corpora: ``bible-es-en`` (bundled) and ``multi30k-de-en`` /
``multi30k-en-de``: Multi30k task 1 read from ``--multi30k DIR`` (default
``$HEEDFUL_MULTI30K`` or ``../shared/data/multi30k``; research license, never copied into the
repository): ``train``, ``val`` as dev (first ``data.dev_limit`` lines at each validation),
``test_2016_flickr`` as test.

``train`` trains each model for each budget (``train.max_minutes``, validation included, a
total over sittings) in ``runs/budget/CORPUS/MODEL-Mmin``; a longer budget starts as a copy of
the shorter finished run and resumes it (resume is exact, and nothing but where training
stops depends on the budget: :func:`experiments.conv.continue_from`). Re-running resumes
unfinished runs and skips finished ones, so the curves may be filled in over several sittings.

``probe`` is the Transformer recipe search: each :data:`VARIANTS` entry (the peers'
Transformer, :func:`heedful.presets.peers_transformer`, with overrides) trained ``--minutes``
on bible-es-en, scored on its dev curve (BLEU and loss on the first 300 dev verses, greedy, at
every validation) — never on test.

``report`` scores every finished run's best checkpoint on the full test set with beam 5
(sacreBLEU default signature; also lowercased, to set beside published figures that lowercase)
and writes docs/cpu_budget.json (rows of runs this checkout lacks are kept), .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv import continue_from, median_train_rate, train_run

# One GEMM library for every run: "auto" times both at each start and can pick the slower one
# on an AVX2 CPU for a whole run (docs/benchmarks.md#quickstart), a budget lost by chance
os.environ.setdefault("HEEDFUL_CPU_GEMM", "mkl")
ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "budget"
DOCS = ROOT / "docs"
MODELS = {"rnn": "quickstart", "transformer": "transformer-small", "conv": "conv-small"}
COLORS = {"rnn": "tab:blue", "transformer": "tab:orange", "conv": "tab:green"}
CORPORA = ("bible-es-en", "multi30k-de-en", "multi30k-en-de")
# The recipe search: name -> overrides (dotted keys) of the peers' Transformer. Each row of the
# table in docs/cpu_budget.md#the-transformer-recipe was one of these, trained alone.
_ISQRT = {"train.schedule": "inverse_sqrt", "train.lr": 2e-3, "train.warmup_steps": 200,
          "tokenizer.vocab_size": 4000}
_SMALL = {"model.encoder_layers": 2, "model.decoder_layers": 2, "model.ff_dim": 512}
VARIANTS: dict[str, dict[str, Any]] = {
    "3x3-bt6000": {**_ISQRT, "train.batch_tokens": 6000},
    "2x2-ff512-bt3000": {**_ISQRT, **_SMALL, "train.batch_tokens": 3000},
    "2x2-ff512-bt3000-lr3e-3-wu100": {**_ISQRT, **_SMALL, "train.batch_tokens": 3000,
                                      "train.lr": 3e-3, "train.warmup_steps": 100},
    "3x3-bt3000": {**_ISQRT, "train.batch_tokens": 3000},
}


def multi30k_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("HEEDFUL_MULTI30K") or ROOT.parent / "shared" / "data"
                / "multi30k")
    if not (path / "train.de.gz").is_file():
        sys.exit(f"no Multi30k in {path} (train.de.gz missing): pass --multi30k DIR")
    return path


def corpus_data(corpus: str, multi30k: Path | None) -> dict[str, Any]:
    """The ``data`` keys that point a preset at ``corpus``."""
    if corpus == "bible-es-en":
        return {}
    assert multi30k is not None
    src, tgt = corpus.removeprefix("multi30k-").split("-")

    def split(name: str) -> dict[str, str]:
        return {side: str(multi30k / f"{name}.{lang}.gz")
                for side, lang in (("src", src), ("tgt", tgt))}

    return {"dataset": None, "format": "text", "train": split("train"), "dev": split("val"),
            "test": split("test_2016_flickr")}


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        raw = raw.setdefault(part, {})
    raw[last] = value


def run_config(preset: str, corpus: str, multi30k: Path | None, minutes: float, threads: int,
               overrides: dict[str, Any] | None = None) -> Any:
    from heedful.config import config_from_dict
    from heedful.presets import get_preset, peers_transformer

    base = peers_transformer() if preset == "peers-transformer" else get_preset(preset)
    raw = base.model_dump(mode="json", exclude_unset=True)
    raw["data"] = {**raw.get("data", {}), **corpus_data(corpus, multi30k)}
    raw["train"] = {**raw.get("train", {}), "max_minutes": minutes, "threads": threads,
                    "seed": 1234}
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, f"{preset} on {corpus}, {minutes:g} minutes")


def cmd_train(args: argparse.Namespace) -> None:
    multi30k = multi30k_dir(args.multi30k) if args.corpus != "bible-es-en" else None
    budgets = sorted(float(m) for m in args.minutes.split(","))
    for shorter, minutes in zip([None, *budgets], budgets, strict=False):
        for name in args.names or MODELS:
            run_dir = RUNS / args.corpus / f"{name}-{minutes:g}min"
            if shorter is not None and not run_dir.exists():
                continue_from(RUNS / args.corpus / f"{name}-{shorter:g}min", run_dir)
            train_run(run_config(MODELS[name], args.corpus, multi30k, minutes, args.threads),
                      run_dir)


def dev_curve(run_dir: Path) -> list[dict[str, Any]]:
    return [{"step": r["step"], "minutes": round(r["train_seconds"] / 60, 2),
             "dev_bleu": r["dev_bleu"], "dev_loss": r["dev_loss"]}
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "dev_bleu" in r]


def cmd_probe(args: argparse.Namespace) -> None:
    out = DOCS / "transformer_recipe.json"
    rows = {r["variant"]: r for r in json.loads(out.read_text())} if out.is_file() else {}
    for name in args.names or VARIANTS:
        run_dir = RUNS / "probe" / f"{name}-{args.minutes:g}min"
        cfg = run_config("peers-transformer", "bible-es-en", None, args.minutes, args.threads,
                         {"data.dev_limit": 300, "train.valid_every": args.valid_every,
                          **VARIANTS[name]})
        train_run(cfg, run_dir)
        curve = dev_curve(run_dir)
        rows[name] = {"variant": name, "overrides": VARIANTS[name], "minutes": args.minutes,
                      "steps": curve[-1]["step"] if curve else 0,
                      "train_tokens_per_s": round(median_train_rate(run_dir)),
                      "final_dev_bleu": curve[-1]["dev_bleu"] if curve else None,
                      "final_dev_loss": curve[-1]["dev_loss"] if curve else None,
                      "dev_curve": curve, "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d")}
        print(json.dumps({k: v for k, v in rows[name].items() if k != "dev_curve"}))
        out.write_text(json.dumps(list(rows.values()), indent=1) + "\n")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def evaluate_run(run_dir: Path, threads: int) -> dict[str, Any]:
    import torch

    from heedful.analysis.metrics import lowercased_bleu, score_corpus
    from heedful.checkpoint import find_checkpoint
    from heedful.data import load_split
    from heedful.decoding.translator import Translator
    from heedful.nn.architectures import count_parameters

    torch.set_num_threads(threads)
    translator = Translator.from_checkpoint(run_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None
    hyps = [r.text for r in translator.translate(test.src, beam_size=5)]
    scores = score_corpus(hyps, test.tgt)
    bleu_lc, bleu_lc_signature = lowercased_bleu(hyps, test.tgt)
    latest = json.loads((find_checkpoint(run_dir, "latest") / "trainer_state.json").read_text())
    return {
        "corpus": run_dir.parent.name, "run": run_dir.name,
        "model": run_dir.name.rsplit("-", 1)[0], "minutes": float(run_dir.name.rsplit("-", 1)[1]
                                                                  .removesuffix("min")),
        "parameters": count_parameters(translator.model),
        "test_bleu": scores.bleu, "test_chrf": scores.chrf, "bleu_signature": scores.bleu_signature,
        "test_bleu_lc": bleu_lc, "bleu_lc_signature": bleu_lc_signature,
        "steps": latest["step"], "train_minutes": round(latest["train_seconds"] / 60, 1),
        "train_tokens_per_s": round(median_train_rate(run_dir)),
        "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
    }


def cmd_report(args: argparse.Namespace) -> None:
    published = DOCS / "cpu_budget.json"
    rows = {(r["corpus"], r["run"]): r
            for r in (json.loads(published.read_text()) if published.is_file() else [])}
    for run_dir in sorted(RUNS.glob("*/*min")):
        if run_dir.parent.name not in CORPORA:
            continue
        cached = run_dir / "eval.json"
        if not cached.is_file() or args.refresh:
            cached.write_text(json.dumps(evaluate_run(run_dir, args.threads), indent=1))
        row = json.loads(cached.read_text())
        rows[(row["corpus"], row["run"])] = row
        print(json.dumps(row))
    ordered = sorted(rows.values(), key=lambda r: (r["corpus"], r["model"], r["minutes"]))
    published.write_text(json.dumps(ordered, indent=1) + "\n")
    # one picture per machine: minutes on different CPUs are different budgets
    here = cpu_name()
    plot([r for r in ordered if r["cpu"] == here], DOCS / "cpu_budget.png", here)
    write_markdown(ordered, DOCS / "cpu_budget.md")


def plot(rows: list[dict[str, Any]], path: Path, cpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = [c for c in CORPORA if any(r["corpus"] == c for r in rows)]
    fig, axes = plt.subplots(1, max(len(corpora), 1), figsize=(4.5 * max(len(corpora), 1), 3.6),
                             squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=False):
        for model in MODELS:
            points = sorted((r["minutes"], r["test_bleu"]) for r in rows
                            if r["corpus"] == corpus and r["model"] == model)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=model,
                        color=COLORS[model])
        ax.set_title(f"{corpus} ({cpu}, 2 threads)", fontsize=9)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("test BLEU (beam 5)")
        ax.set_xticks([15, 30, 60])
        ax.set_xlim(10, 65)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(rows: list[dict[str, Any]], path: Path) -> None:
    lines = [
        "# Test BLEU against wall-clock minutes",
        "",
        "Generated by `python experiments/cpu_budget.py report` (after `... train --corpus C`): "
        "each model trained alone on the machine for the budget in its name (validation "
        "included, `train.threads` 2, seed 1234); the best checkpoint by dev BLEU decodes the "
        "full test set with beam 5 (Multi30k: test_2016_flickr). BLEU lc: the same, "
        "lowercased. Picture: [cpu_budget.png](cpu_budget.png).",
        "",
        "| corpus | model | minutes | parameters | updates | train tok/s | test BLEU | chrF "
        "| BLEU lc | CPU | date |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['model']} | {r['minutes']:g} | "
                     f"{r['parameters'] / 1e6:.2f}M | {r['steps']:,} | "
                     f"{r['train_tokens_per_s']:,} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} | "
                     f"{r['test_bleu_lc']:.2f} | {r['cpu']} | {r['date']} |")
    if rows:
        lines += ["", f"BLEU signature: `{rows[0]['bleu_signature']}`; lowercased: "
                  f"`{rows[0]['bleu_lc_signature']}`"]
    lines += recipe_lines()
    path.write_text("\n".join(lines) + "\n")


def recipe_lines() -> list[str]:
    """The probe table: how the Transformer recipe was chosen (dev figures only)."""
    probes = DOCS / "transformer_recipe.json"
    if not probes.is_file():
        return []
    lines = ["", "## The Transformer recipe", "",
             "`python experiments/cpu_budget.py probe [--minutes M] [VARIANT ...]`: "
             "the peers' Transformer (3+3 layers, d_model 256, feed-forward 1024; "
             "`heedful.presets.peers_transformer`) with each variant's overrides, trained "
             "alone on bible-es-en for M minutes (2 threads); BLEU and loss on the first 300 "
             "dev verses (greedy) at the last validation. Never scored on test.", "",
             "| variant | overrides | minutes | updates | tok/s | dev loss | dev BLEU | CPU "
             "| date |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in json.loads(probes.read_text()):
        changes = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["overrides"].items())
        lines.append(f"| {r['variant']} | {changes} | {r['minutes']:g} | {r['steps']} | "
                     f"{r['train_tokens_per_s']:,} | {r['final_dev_loss']} | "
                     f"{r['final_dev_bleu']} | {r['cpu']} | {r['date']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--multi30k", help="the Multi30k folder ({split}.{lang}.gz files)")
    common.add_argument("--threads", type=int, default=2)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", parents=[common])
    p.add_argument("names", nargs="*", metavar="MODEL", help=f"of {', '.join(MODELS)}")
    p.add_argument("--corpus", choices=CORPORA, default="bible-es-en")
    # comma-separated: a list option would swallow the model names that follow it
    p.add_argument("--minutes", default="15,30,60", help="budgets, e.g. 15,30,60")
    p = sub.add_parser("probe", parents=[common])
    p.add_argument("names", nargs="*", metavar="VARIANT")
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--valid-every", type=int, default=100)
    p = sub.add_parser("report", parents=[common])
    p.add_argument("--refresh", action="store_true", help="re-evaluate cached runs")
    args = parser.parse_args()
    known = {"train": MODELS, "probe": VARIANTS}.get(args.command, {})
    if args.command != "report" and (unknown := set(args.names) - set(known)):
        parser.error(f"unknown name(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(known)}")
    {"train": cmd_train, "probe": cmd_probe, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
