"""Terminology constraints on the shipped model: does each output contain its phrase, and
what does it do to BLEU?

    nice -n 19 python experiments/constraints.py     # -> docs/constraints.json

The first 500 test verses of bible-es-en, beam 5. Each verse gets one constraint, picked from
its reference by a fixed rule: the longest word (letters only, at least 4 of them, as
written) that the unconstrained translation does not contain as a word; if it contains them
all, the longest reference word. The verses are translated without and with their constraint
(``Translator.translate(..., constraints=...)``) and scored with sacrebleu; the share of
outputs containing the constraint is counted as text (substring) and as a whole word.
Prints the JSON it writes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from long_documents import cpu_model

from heedful.analysis.metrics import score_corpus
from heedful.datasets import dataset_file
from heedful.decoding.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "constraints.json"
VERSES, BEAM = 500, 5
WORD = re.compile(r"[^\W\d_]+")


def pick(reference: str, output: str) -> str:
    """The constraint of one verse (see the module docstring)."""
    words = [w for w in WORD.findall(reference) if len(w) >= 4] or WORD.findall(reference)
    have = set(WORD.findall(output))
    missing = [w for w in words if w not in have]
    return max(missing or words, key=len)  # max keeps the first of the longest


def main() -> None:
    torch.set_num_threads(2)
    src = dataset_file("bible-es-en", "test.es").read_text(encoding="utf-8").splitlines()
    ref = dataset_file("bible-es-en", "test.en").read_text(encoding="utf-8").splitlines()
    src, ref = src[:VERSES], ref[:VERSES]
    translator = Translator.from_checkpoint("bible-es-en")
    start = time.perf_counter()
    plain = [t.text for t in translator.translate(src, beam_size=BEAM)]
    plain_s = time.perf_counter() - start
    wanted = [pick(r, p) for r, p in zip(ref, plain, strict=True)]
    start = time.perf_counter()
    forced = [t.text for t in translator.translate(src, beam_size=BEAM,
                                                   constraints=[[w] for w in wanted])]
    forced_s = time.perf_counter() - start
    base, con = score_corpus(plain, ref), score_corpus(forced, ref)
    result: dict[str, Any] = {
        "model": "bible-es-en (shipped)", "verses": VERSES, "beam_size": BEAM,
        "rule": "longest reference word (letters only, >= 4) missing from the unconstrained "
                "output as a word; else the longest reference word",
        "constraint_missing_before": sum(w not in WORD.findall(p)
                                         for w, p in zip(wanted, plain, strict=True)),
        "share_containing_text": _share(wanted, forced, whole_word=False),
        "share_containing_word": _share(wanted, forced, whole_word=True),
        "share_containing_word_unconstrained": _share(wanted, plain, whole_word=True),
        "bleu_unconstrained": base.bleu, "bleu_constrained": con.bleu,
        "bleu_change": round(con.bleu - base.bleu, 2),
        "chrf_unconstrained": base.chrf, "chrf_constrained": con.chrf,
        "seconds_unconstrained": round(plain_s, 1), "seconds_constrained": round(forced_s, 1),
        "bleu_signature": base.bleu_signature, "cpu": cpu_model(), "threads": 2,
        "examples": [{"constraint": w, "unconstrained": p, "constrained": f, "reference": r}
                     for w, p, f, r in list(zip(wanted, plain, forced, ref, strict=True))[:3]],
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1, ensure_ascii=False))


def _share(wanted: list[str], outputs: list[str], whole_word: bool) -> float:
    hits = sum((w in WORD.findall(o)) if whole_word else (w in o)
               for w, o in zip(wanted, outputs, strict=True))
    return round(hits / len(wanted), 4)


if __name__ == "__main__":
    main()
