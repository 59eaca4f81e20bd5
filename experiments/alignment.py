"""Experiment 2 of the analysis issue: how well does attention align words?

    python experiments/eflomal_baseline.py    # the baseline (pip install eflomal==2.0.0)
    python experiments/alignment.py [NAME ...]  # after experiments/variants.py train

For every attention variant trained by ``experiments/variants.py``: choose the extraction
settings (layer, head, step shift, method) on the bible-es-en *dev* gold links
(``heedful align --tune``; test is never used for choosing), then force-decode the test set
and report AER over all predicted links and restricted to annotated words, precision and
recall, beside eflomal. For the Transformer, also every layer and head on test (with the
tuned method and shift). Writes docs/alignment.{md,json} and docs/alignment_example.png.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from heedful.analysis.attention_alignment import AlignSettings, pair_attention, save_settings, tune
from heedful.analysis.plots import plot_alignment
from heedful.analysis.word_alignment import alignment_scores, read_alignments
from heedful.data import read_lines
from heedful.datasets import dataset_file, dataset_split
from heedful.decoding.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from variants import RUNS, VARIANTS  # noqa: E402

DOCS = ROOT / "docs"
EFLOMAL = ROOT / "runs" / "eflomal" / "scores.json"
CACHE = ROOT / "runs" / "alignment"
SHIPPED = ROOT / "heedful" / "pretrained" / "bible-es-en"  # the longer-trained shipped model


def gold(split: str) -> tuple[list[str], list[str], list[Any], list[Any]]:
    src_file, tgt_file = dataset_split("bible-es-en", split)
    return (read_lines(src_file), read_lines(tgt_file),
            read_alignments(dataset_file("bible-es-en", f"{split}.align.sure")),
            read_alignments(dataset_file("bible-es-en", f"{split}.align")))


def evaluate_variant(name: str, dev: Any, test: Any) -> dict[str, Any]:
    """Tune on dev, score on test; cached in the run dir (alignment_eval.json)."""
    dev_src, dev_tgt, dev_sure, dev_possible = dev
    test_src, test_tgt, test_sure, test_possible = test
    run_dir = RUNS / name if name != "shipped" else SHIPPED
    translator = Translator.from_checkpoint(run_dir)
    dev_pairs = pair_attention(translator, dev_src, dev_tgt)
    settings, dev_scores, _ = tune(dev_pairs, dev_sure, dev_possible)
    if name != "shipped":
        save_settings(run_dir, settings, dev_scores, tuned_on="bible-es-en dev (998 pairs)")
    del dev_pairs
    test_pairs = pair_attention(translator, test_src, test_tgt)
    scores = alignment_scores([p.links(settings) for p in test_pairs], test_sure, test_possible)
    default = alignment_scores([p.links(AlignSettings()) for p in test_pairs], test_sure,
                               test_possible)
    row: dict[str, Any] = {
        "variant": name, "settings": settings.describe(), "settings_raw": asdict(settings),
        "dev_aer_restricted": dev_scores.aer_restricted, **scores.as_dict(),
        "default_settings_aer_restricted": default.aer_restricted}
    _, layers, heads, _ = test_pairs[0].attention.shape
    if layers > 1 or heads > 1:
        table = []
        for layer in [None, *range(layers)]:
            for head in [None, *range(heads)]:
                s = replace(settings, layer=layer, head=head)
                sc = alignment_scores([p.links(s) for p in test_pairs], test_sure,
                                      test_possible)
                table.append({"layer": "mean" if layer is None else layer,
                              "head": "mean" if head is None else head, "aer": sc.aer,
                              "aer_restricted": sc.aer_restricted,
                              "precision_restricted": sc.precision_restricted,
                              "recall": sc.recall})
        row["layers_heads"] = table
    return row


def main() -> None:
    names = sys.argv[1:] or [*[v for v in VARIANTS if v != "none"], "shipped"]
    dev, test = gold("dev"), gold("test")
    for name in names:
        run_dir = RUNS / name if name != "shipped" else SHIPPED
        cache = CACHE / f"{name}.json"
        if not (run_dir / "checkpoints").is_dir():
            print(f"{name}: no run in {run_dir}; skipped")
            continue
        if not cache.is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(evaluate_variant(name, dev, test), indent=1))
        print(cache.read_text()[:300])
    rows = [json.loads((CACHE / f"{n}.json").read_text())
            for n in [*VARIANTS, "shipped"] if (CACHE / f"{n}.json").is_file()]
    eflomal = json.loads(EFLOMAL.read_text()) if EFLOMAL.is_file() else None
    DOCS.mkdir(exist_ok=True)
    (DOCS / "alignment.json").write_text(json.dumps({"variants": rows, "eflomal": eflomal},
                                                    indent=1) + "\n")
    best = min(rows, key=lambda r: r["aer_restricted"]) if rows else None
    if best is not None:
        name = best["variant"]
        settings = AlignSettings(**best["settings_raw"])
        translator = Translator.from_checkpoint(RUNS / name if name != "shipped" else SHIPPED)
        test_src, test_tgt, test_sure, test_possible = test
        k = next(i for i, s in enumerate(test_src) if 12 <= len(s.split(" ")) <= 18)
        p = pair_attention(translator, [test_src[k]], [test_tgt[k]])[0]
        plot_alignment(p.matrix(settings), test_src[k].split(" "), test_tgt[k].split(" "),
                       DOCS / "alignment_example.png", predicted=p.links(settings),
                       sure=test_sure[k], possible=test_possible[k],
                       title=f"{name}: {settings.describe()} (test verse {k + 1})")
    write_markdown(rows, eflomal, best["variant"] if best else None)


def write_markdown(rows: list[dict[str, Any]], eflomal: dict[str, Any] | None,
                   best: str | None) -> None:
    heads_table = next((r["layers_heads"] for r in rows if r["variant"] == "transformer"
                        and "layers_heads" in r), [])
    lines = [
        "# Word alignment from attention",
        "",
        "Generated by `python experiments/alignment.py` (after `experiments/variants.py "
        "train` and `experiments/eflomal_baseline.py`). Each model of "
        "[variants.md](variants.md) force-decodes the bible-es-en test references; links are "
        "read from its attention with the settings chosen on the **dev** gold links "
        "(`heedful align RUN --tune`), then scored against `test.align.sure` (sure) and "
        "`test.align` (possible).",
        "",
        "*AER* counts every predicted link; *restricted* keeps only links whose source word "
        "and target word each carry at least one gold link (the gold marks only words with a "
        "Strong's number, so links of unannotated words cannot be judged); recall is always "
        "over all sure links. Definitions: `heedful/analysis/word_alignment.py`. `shipped` is "
        "the model shipped as `bible-es-en` (the longer 55-minute run of "
        "`configs/bible-es-en.yaml`, scaled-dot GRU 384), for comparison with the 15-minute "
        "variants.",
        "",
        "| aligner | settings (chosen on dev) | AER | restricted AER | precision (restr.) "
        "| recall | restricted AER, untuned default |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if eflomal:
        lines.append(f"| eflomal 2.0.0 (model 3, train+test, gdfa) | - | {eflomal['aer']:.3f} | "
                     f"{eflomal['aer_restricted']:.3f} | {eflomal['precision_restricted']:.3f} "
                     f"| {eflomal['recall']:.3f} | |")
    for r in rows:
        lines.append(f"| `{r['variant']}` | {r['settings']} | {r['aer']:.3f} | "
                     f"{r['aer_restricted']:.3f} | {r['precision_restricted']:.3f} | "
                     f"{r['recall']:.3f} | {r['default_settings_aer_restricted']:.3f} |")
    if heads_table:
        lines += ["", "## Transformer: every decoder layer and head (test, tuned method and "
                  "shift)", "", "| layer | head | AER | restricted AER | precision (restr.) | "
                  "recall |", "|---|---|---:|---:|---:|---:|"]
        for h in heads_table:
            lines.append(f"| {h['layer']} | {h['head']} | {h['aer']:.3f} | "
                         f"{h['aer_restricted']:.3f} | {h['precision_restricted']:.3f} | "
                         f"{h['recall']:.3f} |")
    if best:
        lines += ["", f"Example (best variant, `{best}`): attention over words with its "
                  "predicted links (dots) and the gold sure (red) / possible (orange) links.",
                  "", "![alignment example](alignment_example.png)"]
    (DOCS / "alignment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
