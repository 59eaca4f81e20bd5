"""Word alignments of a training corpus from a statistical aligner: eflomal (Östling &
Tiedemann 2016), in both directions, symmetrized with grow-diag-final-and.

eflomal is GPLv3: heedful never imports it. ``pip install 'heedful[align]'`` installs its
``eflomal-align`` program, which :func:`align_files` runs as a separate process on plain text
files (words split on whitespace); any other aligner that writes Pharaoh lines (``i-j``,
0-based source word i, target word j) serves guided alignment the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from heedful.analysis.word_alignment import format_links, grow_diag_final_and, parse_links
from heedful.errors import DataError

ALIGNER = "eflomal-align"


def find_aligner() -> str:
    """The path of ``eflomal-align`` (beside this interpreter, or on PATH)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which(ALIGNER, path=search)
    if binary is None:
        raise DataError(f"{ALIGNER} not found: install the optional aligner with "
                        "pip install 'heedful[align]' (eflomal, GPLv3, run as a separate "
                        "program), or align with another tool that writes Pharaoh lines")
    return binary


def align_files(src: Path, tgt: Path, out: Path, work: Path, model: int = 3) -> int:
    """Align the line-aligned ``src`` / ``tgt`` files with eflomal (``model`` 1: IBM1, 2:
    +HMM, 3: +fertility) in both directions, symmetrize each line with grow-diag-final-and
    and write the Pharaoh lines to ``out``; ``work`` holds the directional links. Returns the
    number of lines written."""
    fwd, rev = work / "forward.links", work / "reverse.links"
    done = subprocess.run([find_aligner(), "-s", str(src), "-t", str(tgt), "-f", str(fwd),
                           "-r", str(rev), "--overwrite", "-m", str(model)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DataError(f"{ALIGNER} failed (exit {done.returncode}): "
                        f"{done.stderr.strip()[-1500:]}")
    lines = 0
    with open(fwd, encoding="utf-8") as f, open(rev, encoding="utf-8") as r, \
            open(out, "w", encoding="utf-8") as o:
        for n, (a, b) in enumerate(zip(f, r, strict=True), 1):
            o.write(format_links(grow_diag_final_and(parse_links(a, f"{fwd}, line {n}"),
                                                     parse_links(b, f"{rev}, line {n}")))
                    + "\n")
            lines += 1
    return lines
