"""``heedful data``: build a summarization or dialogue corpus from local sources."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``data``."""
    p = subparsers.add_parser("data", help="build a corpus: debian-desc (summarization) or "
                                           "chatterbot (dialogue)")
    p.add_argument("corpus", choices=["debian-desc", "chatterbot"])
    p.add_argument("--out", help="output directory (default data/debian-desc-summ or "
                                 "data/chatterbot)")
    p.add_argument("--lists", default="/var/lib/apt/lists",
                   help="debian-desc: apt's lists directory (default /var/lib/apt/lists)")
    p.add_argument("--pattern", default="*_i18n_Translation-en*",
                   help="debian-desc: index files to read (glob in --lists)")
    p.add_argument("--context-turns", type=int, default=2,
                   help="chatterbot: previous turns in each context (default 2)")
    p.add_argument("--separator", default="<sep>", help="chatterbot: turn separator")
    p.add_argument("--language", default="english", help="chatterbot: corpus language")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    """Build the debian-desc (package descriptions -> summaries) or chatterbot (context ->
    reply) corpus; print its pair counts."""
    from heedful.corpora import build_chatterbot_pairs, build_debian_summ

    if args.corpus == "debian-desc":
        out = Path(args.out or "data/debian-desc-summ")
        stats = build_debian_summ(out, Path(args.lists), args.pattern)
    else:
        out = Path(args.out or "data/chatterbot")
        stats = build_chatterbot_pairs(out, args.context_turns, args.language, args.separator)
    if args.json:
        print(json.dumps(stats))
    else:
        pairs = stats["pairs"]
        assert isinstance(pairs, dict)
        print(f"{stats['corpus']}: " + ", ".join(f"{k} {v:,}" for k, v in pairs.items())
              + f" pairs written to {out}/ (statistics: {out}/stats.json)")
    return 0
