"""Beam-search decoding speed of a trained run on its own test set.

    python experiments/decode_speed.py RUN_DIR [--limit 300] [--beam 5] [--passes 3]

Prints which heedful it imported and sentences/s of each pass over the first ``--limit`` test
sentences (2 threads, after a 16-sentence warm-up). To compare two versions of the code on
one model, run it from each checkout in turn (``PYTHONPATH=/path/to/checkout``), alternating.
"""

from __future__ import annotations

import argparse
import time

import torch

import heedful
from heedful.data import load_split
from heedful.decoding.translator import Translator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.run_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None, "the run's data has no test split"
    src = test.src[: args.limit]
    translator.translate(src[:16], beam_size=args.beam)  # warm-up
    rates = []
    for _ in range(args.passes):
        start = time.perf_counter()
        translator.translate(src, beam_size=args.beam)
        rates.append(round(len(src) / (time.perf_counter() - start), 1))
    print(heedful.__file__, "sentences/s:", rates)


if __name__ == "__main__":
    main()
