"""``heedful data``: build a summarization, dialogue, image or speech corpus from local sources."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from heedful.errors import CorpusBuildError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``data``."""
    p = subparsers.add_parser("data", help="build a corpus: debian-desc (summarization), "
                                           "chatterbot (dialogue), digits (handwritten "
                                           "digit strings, image -> text), text-lines "
                                           "(printed text-line images -> text), "
                                           "spoken-digits or spoken-sentences (speech -> "
                                           "text)")
    p.add_argument("corpus", choices=["debian-desc", "chatterbot", "digits", "text-lines",
                                      "spoken-digits", "spoken-sentences"])
    p.add_argument("--out", help="output directory (default data/CORPUS; "
                                 "data/debian-desc-summ for debian-desc)")
    p.add_argument("--from", dest="source",
                   help="spoken-digits: a clone of the Free Spoken Digit Dataset")
    p.add_argument("--lists", default="/var/lib/apt/lists",
                   help="debian-desc: apt's lists directory (default /var/lib/apt/lists)")
    p.add_argument("--pattern", default="*_i18n_Translation-en*",
                   help="debian-desc: index files to read (glob in --lists)")
    p.add_argument("--context-turns", type=int, default=2,
                   help="chatterbot: previous turns in each context (default 2)")
    p.add_argument("--separator", default="<sep>", help="chatterbot: turn separator")
    p.add_argument("--language", default="english", help="chatterbot: corpus language")
    p.add_argument("--seed", type=int, default=1,
                   help="digits, text-lines, spoken-*: random seed (default 1)")
    p.add_argument("--train", type=int,
                   help="digits, text-lines, spoken-*: training strings, lines or "
                        "utterances (default 20000; spoken-digits 4000; spoken-sentences 5000)")
    p.add_argument("--dev", type=int,
                   help="text-lines, spoken-sentences: dev lines or utterances (default 500; "
                        "200)")
    p.add_argument("--test", type=int,
                   help="text-lines, spoken-sentences: test lines or utterances (default "
                        "1000; 500)")
    p.add_argument("--fonts", default="/usr/share/fonts",
                   help="text-lines: where to look for the fonts (default /usr/share/fonts)")
    p.add_argument("--dev-per-length", type=int,
                   help="digits, spoken-digits: dev strings of each length (default 50; 20)")
    p.add_argument("--test-per-length", type=int,
                   help="digits, spoken-digits: test strings of each length (default 100; 50)")
    p.add_argument("--max-length", type=int,
                   help="digits, spoken-digits: longest string, in digits (default 12; 10)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    """Build the debian-desc (package descriptions -> summaries), chatterbot (context ->
    reply) or digits (image of a digit string -> the digits) corpus; print its counts."""
    def given(**defaults: int) -> dict[str, int]:
        return {k: v if getattr(args, k) is None else getattr(args, k)
                for k, v in defaults.items()}

    if args.corpus == "digits":
        from heedful.vision.digits import build_digit_strings  # Pillow and numpy: only here

        out = Path(args.out or "data/digits")
        stats = build_digit_strings(out, args.seed, **given(
            train=20000, dev_per_length=50, test_per_length=100, max_length=12))
        unit, counts = "strings", stats["strings"]
    elif args.corpus == "spoken-digits":
        from heedful.audio.spoken_digits import build_spoken_digits

        if args.source is None:
            raise CorpusBuildError("spoken-digits needs --from DIR: a clone of "
                                   "https://github.com/Jakobovski/free-spoken-digit-dataset")
        out = Path(args.out or "data/spoken-digits")
        stats = build_spoken_digits(Path(args.source), out, args.seed, **given(
            train=4000, dev_per_length=20, test_per_length=50, max_length=10))
        unit, counts = "utterances", stats["utterances"]
    elif args.corpus == "text-lines":
        from heedful.vision.text_lines import build_text_lines

        out = Path(args.out or "data/text-lines")
        stats = build_text_lines(out, args.seed, **given(train=20000, dev=500, test=1000),
                                 font_root=Path(args.fonts))
        splits = stats["splits"]
        assert isinstance(splits, dict)
        unit, counts = "lines", {name: s["lines"] for name, s in splits.items()}
    elif args.corpus == "spoken-sentences":
        from heedful.audio.spoken_sentences import build_spoken_sentences

        out = Path(args.out or "data/spoken-sentences")
        stats = build_spoken_sentences(out, args.seed, **given(train=5000, dev=200, test=500),
                                       workers=os.cpu_count() or 1)
        unit, counts = "utterances", stats["utterances"]
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
