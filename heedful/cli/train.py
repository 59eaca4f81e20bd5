"""``heedful train`` and ``heedful quickstart``: train a model; ``heedful plot``: draw
runs' training curves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from heedful.errors import ConfigError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers
    from heedful.config import Config


def register(subparsers: Subparsers) -> None:
    """Add ``train`` and ``quickstart``."""
    p = subparsers.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config (optional with --preset/--resume)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.hidden_dim=256")
    p.add_argument("--preset", help="start from a named preset (see `heedful presets`)")
    p.add_argument("--run-dir", help="where checkpoints and logs go (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--init-from", help="initialise weights from a trained run (fine-tuning)")
    add_workers_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("quickstart", help="train on the bundled corpus within a time "
                                                 "budget")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quickstart)

    p = subparsers.add_parser("plot", help="draw the training and dev curves of one or "
                                           "several runs (from their metrics.jsonl)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument("-o", "--output", default="curves.png", help="the picture (default "
                                                                "curves.png; .png, .svg, .pdf)")
    p.add_argument("--x", choices=["step", "time"], default="step",
                   help="x axis: update step (default) or training time, over all sittings")
    p.add_argument("--json", action="store_true", help="also print the plotted points as JSON")
    p.set_defaults(func=cmd_plot)


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--workers``: the processes that tokenize the training data when it is prepared."""
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes that tokenize the training data when the run's "
                             "prepared store is built (default 1)")


def workers(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {args.workers})")
    return int(args.workers)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config to train: the YAML file, preset and ``key=value`` overrides, or, with
    ``--resume`` and neither a file nor a preset, the run's saved config."""
    from heedful.config import load_config
    from heedful.presets import get_preset

    base = get_preset(args.preset) if args.preset else None
    config_path = args.config
    overrides = list(args.overrides)
    if config_path and "=" in config_path and not Path(config_path).exists():
        overrides.insert(0, config_path)  # `heedful train --preset x a=b`
        config_path = None
    if args.resume and not (config_path or base):
        if not args.run_dir:
            raise ConfigError("--resume needs --run-dir (the run to continue)")
        saved = Path(args.run_dir) / "config.yaml"
        # a run killed before it wrote its config starts from the given overrides
        return load_config(saved if saved.exists() else None, overrides)
    return load_config(config_path, overrides, base=base)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume, or fine-tune) a model into a run directory; print how it ended."""
    from heedful.training.trainer import train

    config = config_from_args(args)
    run_dir = Path(args.run_dir or f"runs/{config.name if config else 'heedful'}")
    result = train(config, run_dir, resume=args.resume, init_from=args.init_from,
                   progress=not args.no_progress, prepare_workers=workers(args))
    print(f"stopped after {result.steps} steps ({result.stopped_because}); "
          f"best dev score {result.best_score}; best checkpoint {result.best_checkpoint}")
    if result.stop_signal is not None:
        print(f"checkpoint of step {result.steps} saved; continue with: heedful train --resume "
              f"--run-dir {run_dir}", file=sys.stderr)
        return 128 + result.stop_signal  # as a shell reports a process a signal stopped
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Train the quickstart model on the bundled corpus within ``--minutes``."""
    from heedful.quickstart import quickstart

    quickstart(minutes=args.minutes, run_dir=Path(args.run_dir), progress=not args.no_progress)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the runs' curves into ``--output``; say which records a crash had cut off."""
    import json
    import sys

    from heedful.analysis.curves import curves_json, plot_curves, read_curves

    names = [Path(d).name for d in args.run_dirs]
    runs = [read_curves(d, args.x, label=name if names.count(name) == 1 else d)
            for d, name in zip(args.run_dirs, names, strict=True)]
    for run in runs:
        if run.skipped:
            print(f"heedful: skipped {len(run.skipped)} record(s) cut off by a crash in "
                  f"{run.run_dir / 'metrics.jsonl'} (line {', '.join(map(str, run.skipped))})",
                  file=sys.stderr)
    path = plot_curves(runs, args.output, args.x)
    if args.json:
        print(json.dumps({"output": str(path), **curves_json(runs, args.x)}))
    else:
        print(f"curves of {len(runs)} run(s) written to {path}")
    return 0
