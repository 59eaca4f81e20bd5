"""``heedful bench`` and ``heedful presets``: speed figures and the named configurations."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from heedful.cli.options import DEVICE_HELP

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


BENCH_NAMES = ["rnn", "transformer", "transformer-base"]
"""``heedful.presets.BENCH_CONFIGS``, spelled out: parsing the command line imports no torch
(tests/test_bench.py checks the two agree)."""


def register(subparsers: Subparsers) -> None:
    """Add ``bench`` and ``presets``."""
    p = subparsers.add_parser("bench", help="training/decoding speed on the peers' two "
                                            "configurations")
    p.add_argument("--only", choices=BENCH_NAMES, action="append",
                   help="one configuration (repeatable; default rnn and transformer, the "
                        "peers' shapes; transformer-base is the GPU-sized one)")
    p.add_argument("--steps", type=int, default=100, help="timed updates (default 100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed updates first (default 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--rnn-model", help="trained run for the rnn decoding figures")
    p.add_argument("--transformer-model", help="trained run for the transformer decoding "
                                               "figures")
    p.add_argument("--test-limit", type=int, default=None, help="decode the first N test "
                                                                "sentences only")
    p.add_argument("--quantize", choices=["int8"], help="decode with int8 dynamic quantization")
    p.add_argument("--beam-stop", choices=["certain", "top_finished"], default="top_finished",
                   help="beam search stopping rule (default top_finished, the peers' rule)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="training arithmetic: fp32 (default, as the peers on a CPU), bf16 "
                        "autocast (as train.precision=bf16) or fp16 autocast (GPU only)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; decoding as well")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--profile", metavar="FILE",
                   help="also profile 5 updates (torch.profiler); top ops written to FILE")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure training and decoding speed on the rnn and transformer benchmark
    configurations; one configuration runs here, several each in a fresh process."""
    from heedful.bench import format_table, run_isolated, run_one
    from heedful.presets import DEFAULT_BENCH
    from heedful.runtime.device import resolve_device
    from heedful.runtime.precision import check_precision

    device = resolve_device(args.device)  # a missing GPU or bad precision: one line, now
    if not args.skip_training:
        check_precision(args.precision, device, key="--precision")
    names = args.only or list(DEFAULT_BENCH)
    models = {"rnn": args.rnn_model, "transformer": args.transformer_model,
              "transformer-base": None}
    if len(names) == 1:  # this process measures it
        name = names[0]
        reports = [run_one(name, args.steps, args.warmup, args.threads, models[name],
                           args.test_limit, args.quantize, args.compile, args.profile,
                           args.skip_training, args.beam_stop, args.precision, args.device)]
    else:  # one fresh process per configuration: separate peak RSS
        reports = [run_isolated(name, _isolated_argv(args, name, models[name]))
                   for name in names]
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0]))
    else:
        print(format_table(reports))
    return 0


def _isolated_argv(args: argparse.Namespace, name: str, model: str | None) -> list[str]:
    """The ``heedful bench`` options that measure configuration ``name`` alone."""
    argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads",
            str(args.threads)]
    if model:
        argv += [f"--{name}-model", model]
    options: tuple[tuple[str, Any], ...] = (
        ("--test-limit", args.test_limit), ("--quantize", args.quantize),
        ("--profile", f"{args.profile}.{name}" if args.profile else None))
    for flag, value in options:
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--beam-stop", args.beam_stop, "--precision", args.precision, "--device",
             args.device,
             *(["--compile"] if args.compile else [])]
    argv += ["--skip-training"] if args.skip_training else []
    return argv


def cmd_presets(args: argparse.Namespace) -> int:
    """List the named presets, each with the first paragraph of its description."""
    from heedful.presets import PRESETS

    for name, fn in PRESETS.items():
        doc = " ".join((fn.__doc__ or "").split())
        print(f"{name:16s} {doc}")
    return 0
