"""``heedful prepare``: tokenize a config's training data once into the run directory's
memory-mapped store, which ``heedful train`` with the same config and run directory uses."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from heedful.cli.train import add_workers_option, config_from_args, workers

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``prepare``."""
    p = subparsers.add_parser(
        "prepare", help="tokenize the training data into the run directory's memory-mapped "
                        "store (heedful train does it too, when the store is missing or stale)")
    p.add_argument("config", nargs="?", help="YAML config (optional with --preset)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.max_src_len=100")
    p.add_argument("--preset", help="start from a named preset (see `heedful presets`)")
    p.add_argument("--run-dir", help="the run directory to prepare (default runs/NAME)")
    p.add_argument("--init-from", help="take the tokenizer of a trained run (as heedful train "
                                       "--init-from does)")
    add_workers_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_prepare, resume=False)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build the run directory's store unless it is current; print what it holds."""
    from heedful.decoding.translator import resolve_run_dir
    from heedful.errors import ConfigError
    from heedful.store import open_store
    from heedful.training.prepare import ensure_store

    config = config_from_args(args)
    if config.data.source != "text":
        raise ConfigError(f"heedful prepare builds the store of a text corpus; a "
                          f"data.source: {config.data.source} corpus is read into memory when "
                          "training starts (nothing to prepare)")
    run_dir = Path(args.run_dir or f"runs/{config.name}")
    init_dir = resolve_run_dir(args.init_from) if args.init_from else None
    start = time.monotonic()
    reason = ensure_store(config, run_dir, init_dir, workers(args))
    seconds = time.monotonic() - start
    store = open_store(run_dir, verify=reason is None)  # a store just built was hashed as written
    counts = store.manifest["counts"]
    summary = {"store": str(store.path), "built": reason is not None, "reason": reason,
               "pairs": len(store), "read": counts["read"],
               "dropped": counts["dropped"] + counts["skipped"],
               "src_tokens": len(store.src.tokens), "tgt_tokens": len(store.tgt.tokens),
               "seconds": round(seconds, 2), "workers": workers(args)}
    if args.json:
        print(json.dumps(summary))
    elif reason is None:
        print(f"{store.path} is current ({len(store):,} pairs); nothing to do")
    else:
        print(f"prepared {len(store):,} training pairs ({summary['dropped']:,} dropped by the "
              f"length filters, empty sides, blank lines) into {store.path} in {seconds:.1f} s "
              f"({reason})")
    return 0
