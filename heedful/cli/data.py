"""``heedful data``: build a summarization, dialogue or image corpus from local sources."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``data``."""
    p = subparsers.add_parser("data", help="build a corpus: debian-desc (summarization), "
                                           "chatterbot (dialogue), digits (handwritten "
                                           "digit strings, image -> text) or text-lines "
                                           "(printed text-line images -> text)")
    p.add_argument("corpus", choices=["debian-desc", "chatterbot", "digits", "text-lines"])
    p.add_argument("--out", help="output directory (default data/debian-desc-summ, "
                                 "data/chatterbot, data/digits or data/text-lines)")
    p.add_argument("--lists", default="/var/lib/apt/lists",
                   help="debian-desc: apt's lists directory (default /var/lib/apt/lists)")
    p.add_argument("--pattern", default="*_i18n_Translation-en*",
                   help="debian-desc: index files to read (glob in --lists)")
    p.add_argument("--context-turns", type=int, default=2,
                   help="chatterbot: previous turns in each context (default 2)")
    p.add_argument("--separator", default="<sep>", help="chatterbot: turn separator")
    p.add_argument("--language", default="english", help="chatterbot: corpus language")
    p.add_argument("--seed", type=int, default=1,
                   help="digits, text-lines: random seed (default 1)")
    p.add_argument("--train", type=int, default=20000,
                   help="digits, text-lines: training strings or lines (default 20000)")
    p.add_argument("--dev", type=int, default=500, help="text-lines: dev lines (default 500)")
    p.add_argument("--test", type=int, default=1000,
                   help="text-lines: test lines (default 1000)")
    p.add_argument("--fonts", default="/usr/share/fonts",
                   help="text-lines: where to look for the fonts (default /usr/share/fonts)")
    p.add_argument("--dev-per-length", type=int, default=50,
                   help="digits: dev strings of each length (default 50)")
    p.add_argument("--test-per-length", type=int, default=100,
                   help="digits: test strings of each length (default 100)")
    p.add_argument("--max-length", type=int, default=12,
                   help="digits: longest string, in digits (default 12)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    """Build the debian-desc (package descriptions -> summaries), chatterbot (context ->
    reply) or digits (image of a digit string -> the digits) corpus; print its counts."""
    if args.corpus == "digits":
        from heedful.vision.digits import build_digit_strings  # Pillow and numpy: only here

        out = Path(args.out or "data/digits")
        stats = build_digit_strings(out, args.seed, args.train, args.dev_per_length,
                                    args.test_per_length, args.max_length)
        unit, counts = "strings", stats["strings"]
    elif args.corpus == "text-lines":
        from heedful.vision.text_lines import build_text_lines

        out = Path(args.out or "data/text-lines")
        stats = build_text_lines(out, args.seed, args.train, args.dev, args.test,
                                 Path(args.fonts))
        splits = stats["splits"]
        assert isinstance(splits, dict)
        unit, counts = "lines", {name: s["lines"] for name, s in splits.items()}
    else:
        from heedful.corpora import build_chatterbot_pairs, build_debian_summ

        if args.corpus == "debian-desc":
            out = Path(args.out or "data/debian-desc-summ")
            stats = build_debian_summ(out, Path(args.lists), args.pattern)
        else:
            out = Path(args.out or "data/chatterbot")
            stats = build_chatterbot_pairs(out, args.context_turns, args.language,
                                           args.separator)
        unit, counts = "pairs", stats["pairs"]
    if args.json:
        print(json.dumps(stats))
    else:
        assert isinstance(counts, dict)
        print(f"{stats['corpus']}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
              + f" {unit} written to {out}/ (statistics: {out}/stats.json)")
    return 0
