"""The eflomal baseline aligner on the bible-es-en test set (``pip install eflomal==2.0.0``).

    python experiments/eflomal_baseline.py [--out runs/eflomal]   # -> OUT/test.gdfa + scores

As ../shared/data/scripts/eflomal_baseline.sh measured it: eflomal (model 3) aligns the
training data plus the test set together (unsupervised), in both directions; the two are
symmetrized with grow-diag-final-and; the test lines are scored with heedful's AER
(all links and restricted, see :mod:`heedful.analysis.word_alignment`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from heedful.analysis.word_alignment import (
    alignment_scores,
    format_links,
    grow_diag_final_and,
    parse_links,
    read_alignments,
)
from heedful.data import read_lines
from heedful.datasets import dataset_file, dataset_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/eflomal")
    args = parser.parse_args()
    # the console script sits beside this interpreter when eflomal is installed in its venv
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("eflomal-align", path=search)
    if binary is None:
        sys.exit("eflomal-align not found: pip install eflomal==2.0.0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_es, train_en = dataset_split("bible-es-en", "train")
    test_es, test_en = dataset_split("bible-es-en", "test")
    test_src, test_tgt = read_lines(test_es), read_lines(test_en)
    all_es = read_lines(train_es) + test_src
    all_en = read_lines(train_en) + test_tgt
    (out / "all.es").write_text("\n".join(all_es) + "\n", encoding="utf-8")
    (out / "all.en").write_text("\n".join(all_en) + "\n", encoding="utf-8")
    subprocess.run([binary, "-s", str(out / "all.es"), "-t", str(out / "all.en"),
                    "-f", str(out / "fwd"), "-r", str(out / "rev"), "--overwrite", "-m", "3"],
                   check=True)
    n, k = len(all_es), len(test_src)
    fwd = read_lines(out / "fwd")[n - k : n]
    rev = read_lines(out / "rev")[n - k : n]
    predicted = [grow_diag_final_and(parse_links(f), parse_links(r))
                 for f, r in zip(fwd, rev, strict=True)]
    (out / "test.gdfa").write_text("".join(format_links(p) + "\n" for p in predicted))
    sure = read_alignments(dataset_file("bible-es-en", "test.align.sure"))
    possible = read_alignments(dataset_file("bible-es-en", "test.align"))
    scores = alignment_scores(predicted, sure, possible)
    result = {"aligner": "eflomal 2.0.0 (model 3, train+test, grow-diag-final-and)",
              **scores.as_dict()}
    (out / "scores.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
