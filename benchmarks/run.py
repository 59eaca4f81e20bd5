"""Speed benchmark: training target tokens/s, greedy and beam-5 decoding on the test set,
peak RSS. Prints one JSON object (and a table on stderr).

    python benchmarks/run.py --preset quickstart --model bible-es-en
    python benchmarks/run.py --config configs/bible-es-en.yaml --steps 30

Training: ``--steps`` optimizer updates after ``--warmup`` (not timed) on bible-es-en with
the config's batching; tokens/s = real (non-padding) target tokens incl. EOS per second,
median over the measured steps. Decoding: the ``--model`` run directory (or shipped model)
translates the bible-es-en test set (``--test-limit`` sentences) greedily and with beam 5.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from heedful.bench import bench_decoding, bench_training
from heedful.config import load_config
from heedful.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--model", help="run dir or shipped model for the decoding figures")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = get_preset(args.preset) if args.preset else None
    config = load_config(args.config, base=base)
    report: dict[str, object] = {"config": args.config or args.preset or "defaults",
                                 "threads": args.threads, "torch": torch.__version__}
    if not args.skip_training:
        report.update(bench_training(config, args.steps, args.warmup))
    if args.model:
        report.update(bench_decoding(args.model, args.test_limit))
    for key, value in report.items():
        print(f"{key:32s} {value}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
