"""``heedful serve``, ``export`` and ``average``: serve models and derive run directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from heedful.cli.options import add_device_options
from heedful.errors import ConfigError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``export``, ``serve`` and ``average``."""
    p = subparsers.add_parser("export", help="write a run's best model as a new inference-only "
                                             "run dir")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--format", choices=["heedful", "ctranslate2"], default="heedful",
                   help="heedful: an inference-only run dir; ctranslate2: a CTranslate2 model "
                        "(Transformers only)")
    p.add_argument("--float32", action="store_true", help="keep float32 (default: float16)")
    p.add_argument("--quantization", help="ctranslate2 only: e.g. int8, int8_float32, float16")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("serve", help="serve models over HTTP with a web page showing "
                                            "attention")
    p.add_argument("run_dir", nargs="?", help="run directory or shipped model name")
    p.add_argument("--model", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="serve another model under NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-chars", type=int, default=2000, help="characters per text")
    p.add_argument("--timeout", type=float, default=60.0, help="request timeout, seconds")
    p.add_argument("--max-batch", type=int, default=32, help="micro-batch size, in texts")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="micro-batching wait window after the first request")
    p.add_argument("--no-micro-batching", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    add_device_options(p)
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("average", help="average a run's last N checkpoints into a new "
                                              "run dir")
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, required=True, help="how many checkpoints")
    p.add_argument("-o", "--output", help="new run directory (default RUN_DIR-avgN)")
    p.set_defaults(func=cmd_average)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's best model as an inference-only run directory (float16 unless
    --float32) or as a CTranslate2 model."""
    from heedful.checkpoint import export_run
    from heedful.decoding.translator import resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    if args.format == "ctranslate2":
        from heedful.serving.ctranslate2 import export_ctranslate2

        out = export_ctranslate2(run_dir, Path(args.out_dir), args.quantization)
    else:
        export_run(run_dir, Path(args.out_dir), half=not args.float32)
        out = Path(args.out_dir)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported {run_dir} to {out} ({args.format}, {size / 1e6:.1f} MB)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve one or more models over HTTP (JSON API and a web page showing attention) until
    interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("heedful serve needs FastAPI and uvicorn: pip install "
                          "'heedful[serve]'") from None
    import torch

    from heedful.decoding.translator import Translator
    from heedful.runtime.device import resolve_device
    from heedful.serving.server import ServeSettings, create_app, parse_model_args

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)  # a missing GPU stops here, before any model loads
    models = {name: Translator.from_checkpoint(path, device=device, precision=args.precision)
              for name, path in parse_model_args(args.run_dir, args.model).items()}
    settings = ServeSettings(max_texts=args.max_texts, max_chars=args.max_chars,
                             timeout_s=args.timeout, micro_batching=not args.no_micro_batching,
                             max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    app = create_app(models, settings)
    print(f"heedful: serving {', '.join(models)} on http://{args.host}:{args.port}/ "
          f"({device}, {args.precision}; micro-batching "
          f"{'on' if settings.micro_batching else 'off'})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    """Average the run's last --last checkpoints into a new run directory."""
    from heedful.checkpoint import average_run
    from heedful.decoding.translator import resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    out = Path(args.output or f"{run_dir}-avg{args.last}")
    ckpt = average_run(run_dir, out, args.last)
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    print(f"averaged {', '.join(state['averaged_checkpoints'])} into {out}")
    return 0
