"""Summarization report: extractive baselines vs models on the debian-desc test set.

    heedful data debian-desc --out data/debian-desc-summ        # or use the shared copy
    heedful train --preset summarize train.max_minutes=25 --run-dir runs/summ/copy-coverage
    heedful train --preset summarize train.max_minutes=25 model.copy_attention=false \
        model.attention=additive model.coverage_loss_weight=null \
        model.coverage_loss_from_step=0 --run-dir runs/summ/plain
    python experiments/summarization.py --data data/debian-desc-summ \
        runs/summ/plain runs/summ/copy-coverage

Writes docs/summarization.md and .json: ROUGE-1/2/L (rouge-score, stemmed F1), BLEU, chrF,
average output length, the share of output words not in the source (novelty: what copying
lowers) and the share of outputs that repeat a word trigram (what coverage lowers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from heedful.analysis.baselines import first_sentence, first_words
from heedful.analysis.metrics import score_corpus, score_rouge
from heedful.checkpoint import find_checkpoint
from heedful.data import read_parallel
from heedful.decoding.translator import Translator

DOCS = Path(__file__).resolve().parent.parent / "docs"


def describe(hyps: list[str], src: list[str], ref: list[str]) -> dict[str, object]:
    scores = score_corpus(hyps, ref)
    novel = total = repeats = 0
    for h, s in zip(hyps, src, strict=True):
        words = h.lower().split()
        source = set(s.lower().split())
        novel += sum(w not in source for w in words)
        total += len(words)
        grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        repeats += len(grams) != len(set(grams))
    return {"rouge": score_rouge(hyps, ref), "bleu": scores.bleu, "chrf": scores.chrf,
            "avg_words": round(total / max(len(hyps), 1), 2),
            "novel_word_share": round(novel / max(total, 1), 4),
            "repeated_trigram_share": round(repeats / max(len(hyps), 1), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--data", default="data/debian-desc-summ")
    ap.add_argument("--words", type=int, default=10, help="first-words baseline length")
    ap.add_argument("--beam-size", type=int, default=4)
    args = ap.parse_args()
    test = read_parallel(f"{args.data}/test.src", f"{args.data}/test.tgt")
    rows: dict[str, dict[str, object]] = {
        "baseline: first sentence": describe([first_sentence(s) for s in test.src], test.src,
                                             test.tgt),
        f"baseline: first {args.words} words": describe(
            [first_words(s, args.words) for s in test.src], test.src, test.tgt),
        "reference synopses": describe(test.tgt, test.src, test.tgt),
    }
    for run in args.runs:
        translator = Translator.from_checkpoint(run)
        start = time.perf_counter()
        hyps = [r.text for r in translator.translate(test.src, beam_size=args.beam_size,
                                                      progress=True)]
        seconds = time.perf_counter() - start
        m = translator.config.model
        state, best = (json.loads((find_checkpoint(Path(run), which) / "trainer_state.json")
                                  .read_text()) for which in ("latest", "best"))
        row = describe(hyps, test.src, test.tgt)
        row.update({"run": run, "attention": m.attention, "copy": m.copy_attention,
                    "coverage_loss_from_step": m.coverage_loss_from_step,
                    "steps": state.get("step"), "best_step": best.get("step"),
                    "decode_seconds": round(seconds, 1),
                    "examples": [{"source": test.src[i][:300], "reference": test.tgt[i],
                                  "output": hyps[i]} for i in range(0, 40, 8)]})
        rows[f"model: {Path(run).name}"] = row
        print(f"{run}: {row['rouge']}", file=sys.stderr)
    DOCS.mkdir(exist_ok=True)
    (DOCS / "summarization.json").write_text(json.dumps(
        {"test_pairs": len(test.src), "beam_size": args.beam_size, "rows": rows}, indent=1,
        ensure_ascii=False) + "\n", encoding="utf-8")
    lines = [f"Test set: {len(test.src):,} pairs (debian-desc summ). Beam {args.beam_size}. "
             "ROUGE = F1 x 100 (rouge-score, Porter stemmer), averaged over summaries.", "",
             "| system | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU | chrF | words | novel words | "
             "repeated trigram |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        rg = r["rouge"]
        assert isinstance(rg, dict)
        lines.append(f"| {name} | {rg['rouge1']:.2f} | {rg['rouge2']:.2f} | {rg['rougeL']:.2f} "
                     f"| {r['bleu']:.2f} | {r['chrf']:.2f} | {r['avg_words']} | "
                     f"{100 * float(r['novel_word_share']):.1f}% | "  # type: ignore[arg-type]
                     f"{100 * float(r['repeated_trigram_share']):.1f}% |")  # type: ignore[arg-type]
    for name, r in rows.items():
        if "examples" in r:
            lines += ["", f"### {name}: examples", ""]
            for ex in r["examples"]:  # type: ignore[attr-defined]
                lines += [f"* source: {ex['source']}…", f"  * reference: {ex['reference']}",
                          f"  * output: {ex['output']}"]
    (DOCS / "summarization.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:len(rows) + 4]))


if __name__ == "__main__":
    main()
