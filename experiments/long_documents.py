"""Long documents: whole paragraphs against ``split_sentences`` on the shipped model.

    nice -n 19 python experiments/long_documents.py     # -> docs/long_documents.json

The first 400 test verses of bible-es-en, joined 20 to a paragraph (20 paragraphs), are
translated whole and with ``split_sentences`` (pysbd, Spanish rules); both are scored with
sacrebleu against the references joined the same way. Beside them: the 400 verses translated
one by one, scored verse by verse, and the same translations joined into the paragraphs.
Beam 5 (the model's decode config), the CPU, 2 threads. Prints the JSON it writes.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from heedful.analysis.metrics import score_corpus
from heedful.datasets import dataset_file
from heedful.decoding.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "long_documents.json"
VERSES, PER_PARAGRAPH = 400, 20


def paragraphs(lines: list[str]) -> list[str]:
    return [" ".join(lines[i : i + PER_PARAGRAPH]) for i in range(0, len(lines), PER_PARAGRAPH)]


def timed(translator: Translator, lines: list[str], **options: Any) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = [t.text for t in translator.translate(lines, **options)]
    return out, round(time.perf_counter() - start, 1)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    torch.set_num_threads(2)
    src = dataset_file("bible-es-en", "test.es").read_text(encoding="utf-8").splitlines()
    ref = dataset_file("bible-es-en", "test.en").read_text(encoding="utf-8").splitlines()
    src, ref = src[:VERSES], ref[:VERSES]
    para_src, para_ref = paragraphs(src), paragraphs(ref)
    translator = Translator.from_checkpoint("bible-es-en")
    verses, verse_s = timed(translator, src)
    whole, whole_s = timed(translator, para_src)
    split, split_s = timed(translator, para_src, split_sentences=True, split_language="es")
    by_verse = score_corpus(verses, ref)
    rows = {
        "verse_by_verse": {"bleu": by_verse.bleu, "chrf": by_verse.chrf, "seconds": verse_s,
                           "segments": len(src)},
        "verse_by_verse_joined": {**_scores(paragraphs(verses), para_ref), "seconds": verse_s},
        "whole_paragraphs": {**_scores(whole, para_ref), "seconds": whole_s},
        "split_sentences": {**_scores(split, para_ref), "seconds": split_s},
    }
    result = {
        "model": "bible-es-en (shipped)", "verses": VERSES, "per_paragraph": PER_PARAGRAPH,
        "paragraphs": len(para_src), "beam_size": translator.config.decode.beam_size,
        "results": rows,
        "split_share_of_verse_bleu": round(rows["split_sentences"]["bleu"] / by_verse.bleu, 4),
        "whole_words_vs_reference": [len(" ".join(whole).split()), len(" ".join(para_ref).split())],
        "bleu_signature": by_verse.bleu_signature, "cpu": cpu_model(), "threads": 2,
        "example_whole": whole[0][:600], "example_split": split[0][:600],
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1, ensure_ascii=False))


def _scores(hyps: list[str], refs: list[str]) -> dict[str, Any]:
    s = score_corpus(hyps, refs)
    return {"bleu": s.bleu, "chrf": s.chrf, "segments": len(hyps)}


if __name__ == "__main__":
    main()
