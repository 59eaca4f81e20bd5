"""Guided alignment on bible-es-en: the quickstart model with and without it, same budget,
same seed; AER on the test gold links and test BLEU.

    pip install -e ".[align]"                       # eflomal, for heedful align-corpus
    python experiments/guided_alignment.py --minutes 4 --test-limit 300     # the smoke check
    python experiments/guided_alignment.py --minutes 15                     # the goal
    python experiments/guided_alignment.py --updates 1500 --threads 1 --parallel  # load-proof

1. ``heedful align-corpus --preset quickstart -o runs/guided/links.txt``: eflomal (model 3)
   on the training split only, both directions, grow-diag-final-and (cached).
2. Two runs of the quickstart preset for ``--minutes`` of training each (``train.max_minutes``)
   or ``--updates`` updates each (``train.max_steps``: a budget that other work on the machine
   cannot shift, so ``--parallel`` may train both at once), same seed: ``plain`` and
   ``guided`` (``data.train.alignments`` + ``train.guided_alignment_weight=--weight``).
3. Each run aligns the test references (the first ``--test-limit``): with the settings chosen
   on the dev gold links (``heedful align --tune``, as docs/alignment.md does for every
   variant), and, for the guided run, with its defaults (the supervised head, argmax); AER
   over all links and restricted to annotated words (:mod:`heedful.analysis.word_alignment`).
4. Test BLEU/chrF (beam 5, all 1,996 verses) of each run.

Prints one JSON object; ``-o`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from heedful.analysis.attention_alignment import pair_attention, run_settings, tune
from heedful.analysis.metrics import score_corpus
from heedful.analysis.word_alignment import alignment_scores, read_alignments
from heedful.data import read_lines
from heedful.datasets import dataset_file, dataset_split
from heedful.decoding.translator import Translator

ROOT = Path(__file__).resolve().parent.parent


def heedful(*argv: str) -> None:
    # one GEMM backend for both runs: "auto" times both at the start and may pick either
    # (a first try of this experiment trained one run on each: 5,630 vs 7,533 tokens/s)
    env = {**os.environ, "HEEDFUL_CPU_GEMM": os.environ.get("HEEDFUL_CPU_GEMM", "mkl")}
    subprocess.run([sys.executable, "-m", "heedful", *argv], check=True, cwd=ROOT, env=env)


def gold(split: str, limit: int | None = None) -> tuple[list[str], list[str], list[Any],
                                                          list[Any]]:
    src_file, tgt_file = dataset_split("bible-es-en", split)
    return (read_lines(src_file)[:limit], read_lines(tgt_file)[:limit],
            read_alignments(dataset_file("bible-es-en", f"{split}.align.sure"))[:limit],
            read_alignments(dataset_file("bible-es-en", f"{split}.align"))[:limit])


def evaluate(run_dir: Path, test_limit: int | None, guided: bool) -> dict[str, Any]:
    translator = Translator.from_checkpoint(run_dir)
    dev_src, dev_tgt, dev_sure, dev_possible = gold("dev")
    settings, dev_scores, _ = tune(pair_attention(translator, dev_src, dev_tgt), dev_sure,
                                   dev_possible)
    test_src, test_tgt, test_sure, test_possible = gold("test", test_limit)
    pairs = pair_attention(translator, test_src, test_tgt)
    tuned = alignment_scores([p.links(settings) for p in pairs], test_sure, test_possible)
    out: dict[str, Any] = {"tuned_on_dev": {"settings": settings.describe(),
                                            "dev_aer_restricted": dev_scores.aer_restricted,
                                            **tuned.as_dict()}}
    if guided:
        default = run_settings(run_dir)  # no alignment.json here: the supervised head
        scores = alignment_scores([p.links(default) for p in pairs], test_sure, test_possible)
        out["supervised_head"] = {"settings": default.describe(), **scores.as_dict()}
    all_src, all_ref = read_lines(dataset_split("bible-es-en", "test")[0]), \
        read_lines(dataset_split("bible-es-en", "test")[1])
    start = time.monotonic()
    hyps = translator.translate_lines(all_src)
    bleu = score_corpus(hyps, all_ref)
    out["test"] = {"bleu": round(bleu.bleu, 2), "chrf": round(bleu.chrf, 2),
                   "verses": len(all_src), "decode_s": round(time.monotonic() - start, 1),
                   "signature": bleu.bleu_signature}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--updates", type=int, help="budget in updates instead of minutes")
    parser.add_argument("--threads", type=int, help="train.threads of each run")
    parser.add_argument("--parallel", action="store_true", help="train both runs at once")
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--test-limit", type=int, help="align the first N test verses only")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "guided")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    links = args.work / "links.txt"
    report: dict[str, Any] = {"minutes": None if args.updates else args.minutes,
                              "updates": args.updates, "weight": args.weight,
                              "test_limit": args.test_limit}
    if not links.exists():
        start = time.monotonic()
        heedful("align-corpus", "--preset", "quickstart", "-o", str(links))
        report["align_corpus_s"] = round(time.monotonic() - start, 1)
    if args.updates:
        budget, tag = [f"train.max_steps={args.updates}"], f"{args.updates}up"
    else:
        budget, tag = [f"train.max_minutes={args.minutes}"], f"{args.minutes:g}min"
    if args.threads:
        budget.append(f"train.threads={args.threads}")
    runs = {"plain": [], "guided": [f"data.train.alignments={links}",
                                    f"train.guided_alignment_weight={args.weight}"]}
    run_dirs = {"plain": args.work / f"plain-{tag}",  # one plain run serves every weight
                "guided": args.work / f"guided-{tag}-w{args.weight:g}"}
    commands = [["train", "--preset", "quickstart", *budget, *extra, "--run-dir",
                 str(run_dirs[name]), "--no-progress"]
                for name, extra in runs.items() if not (run_dirs[name] / "checkpoints").is_dir()]
    if args.parallel:
        with ThreadPoolExecutor(len(commands) or 1) as pool:
            list(pool.map(lambda argv: heedful(*argv), commands))
    else:
        for argv in commands:
            heedful(*argv)
    for name, extra in runs.items():
        report[name] = evaluate(run_dirs[name], args.test_limit, guided=bool(extra))
        print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
