"""``heedful align``: word alignments from a model's attention, and tuning how they are read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heedful.cli.options import (
    SKIP_BAD_HELP,
    add_align_options,
    add_device_options,
    align_settings,
)
from heedful.cli.streams import closing_bar, output, pair_lines
from heedful.errors import ConfigError, DataError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``align``."""
    p = subparsers.add_parser("align", help="word alignments from attention (Pharaoh i-j to "
                                            "stdout)")
    p.add_argument("run_dir")
    p.add_argument("--src", help="source text, one sentence per line")
    p.add_argument("--tgt", help="its translation (force-decoded), line by line")
    p.add_argument("-o", "--output")
    p.add_argument("--tune", action="store_true",
                   help="choose layer/head/shift/method on dev gold links and store them in "
                        "RUN_DIR/alignment.json (the run's defaults from then on)")
    p.add_argument("--dev-src")
    p.add_argument("--dev-tgt")
    p.add_argument("--dev-align", metavar="GOLD", help="dev sure links")
    p.add_argument("--dev-align-possible", metavar="GOLD2", help="dev possible links")
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-bad-lines", action="store_true", help=SKIP_BAD_HELP)
    add_align_options(p)
    add_device_options(p, precision=False)
    p.set_defaults(func=cmd_align)

    c = subparsers.add_parser(
        "align-corpus", help="word alignments of a config's training split with eflomal "
                             "(for train.guided_alignment_weight; pip install 'heedful[align]')")
    c.add_argument("config", nargs="?", help="YAML config (optional with --preset)")
    c.add_argument("overrides", nargs="*", help="key=value overrides")
    c.add_argument("--preset", help="start from a named preset (see `heedful presets`)")
    c.add_argument("-o", "--output", required=True,
                   help="the Pharaoh file to write, one line per training pair")
    c.add_argument("--model", type=int, choices=(1, 2, 3), default=3,
                   help="eflomal's model: 1 IBM1, 2 +HMM, 3 +fertility (default)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_align_corpus, resume=False)


def cmd_align(args: argparse.Namespace) -> int:
    """Print the word links of each --src/--tgt pair (Pharaoh ``i-j``); with --tune, first
    choose the extraction settings on dev gold links and store them in the run directory."""
    from heedful.decoding.translator import Translator, resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    translator = Translator.from_checkpoint(run_dir, device=args.device)
    if (source := translator.config.data.source) != "text":
        raise ConfigError(f"align needs a model that reads text; {args.run_dir} reads "
                          f"{source}s (data.source: {source}): heedful attention draws its "
                          "attention on the image")
    if args.tune:
        _tune(args, translator, run_dir)
        if not (args.src or args.tgt):
            return 0
    if not (args.src and args.tgt):
        raise DataError("heedful align needs --src and --tgt (the pairs to align)")
    _align(args, translator, run_dir)
    return 0


def _tune(args: argparse.Namespace, translator: Any, run_dir: Path) -> None:
    """Choose layer/head/shift/method on the dev gold links, save them, print the result."""
    from heedful.analysis.attention_alignment import pair_attention, save_settings, tune
    from heedful.analysis.reports import read_gold

    dev_name, dev_src, dev_tgt, dev_sure, dev_possible = _dev_gold(args, translator)
    pairs = pair_attention(translator, dev_src, dev_tgt, progress=not args.json)
    sure = read_gold(dev_sure, len(dev_src), "sure")
    possible = read_gold(dev_possible, len(dev_src), "possible") if dev_possible else None
    settings, scores, table = tune(pairs, sure, possible)
    path = save_settings(run_dir, settings, scores, tuned_on=f"{dev_name} ({len(pairs)} "
                         f"pairs), {dev_sure}" + (f", {dev_possible}" if dev_possible else ""))
    if args.json:
        print(json.dumps({"settings": settings.describe(), "saved": str(path),
                          **scores.as_dict(), "candidates": len(table)}))
    else:
        print(f"best of {len(table)} settings on dev: {settings.describe()}")
        print(f"dev AER {scores.aer:.3f} (restricted {scores.aer_restricted:.3f}), precision "
              f"{scores.precision:.3f}, recall {scores.recall:.3f}; saved to {path}")


def _align(args: argparse.Namespace, translator: Any, run_dir: Path) -> None:
    """Write the links of each --src/--tgt pair, one line (or JSON object) per pair, a chunk
    of pairs at a time."""
    from heedful.analysis.attention_alignment import check_settings, pair_attention
    from heedful.analysis.word_alignment import format_links

    settings = align_settings(args, run_dir)
    bar = None
    if args.output is not None:
        from tqdm import tqdm

        bar = tqdm(unit="pair", desc="align", leave=False)
    with closing_bar(bar), output(args.output) as out:
        for block in pair_lines(args.src, args.tgt, args.skip_bad_lines):
            full = [i for i, (src, tgt) in enumerate(block) if src and tgt]
            pairs = pair_attention(translator, [block[i][0] for i in full],
                                   [block[i][1] for i in full]) if full else []
            check_settings(settings, pairs)
            aligned = dict(zip(full, pairs, strict=True))
            for i in range(len(block)):  # a pair with an empty side: an empty line
                p = aligned.get(i)
                links = format_links(p.links(settings)) if p is not None else ""
                if args.json:
                    out.write(json.dumps({"alignment": links,
                                          "src_words": p.num_src_words if p else 0,
                                          "tgt_words": p.num_tgt_words if p else 0}) + "\n")
                else:
                    out.write(links + "\n")
            if bar is not None:
                bar.update(len(block))


def _dev_gold(args: argparse.Namespace, translator: Any
              ) -> tuple[str, list[str], list[str], str, str | None]:
    """(source file, dev sources, dev targets, sure gold, possible gold) for --tune: given,
    or the bundled dataset's dev files."""
    from heedful.data import read_parallel
    from heedful.datasets import dataset_file, dataset_split

    if args.dev_src or args.dev_tgt or args.dev_align:
        if not (args.dev_src and args.dev_tgt and args.dev_align):
            raise DataError("--dev-src, --dev-tgt and --dev-align go together")
        corpus = read_parallel(args.dev_src, args.dev_tgt)
        return args.dev_src, corpus.src, corpus.tgt, args.dev_align, args.dev_align_possible
    name = translator.config.data.dataset
    if name is None or not dataset_file(name, "dev.align.sure").exists():
        raise DataError("--tune needs dev pairs with gold links: give --dev-src, --dev-tgt "
                        "and --dev-align (and --dev-align-possible)")
    src_file, tgt_file = dataset_split(name, "dev")
    corpus = read_parallel(src_file, tgt_file)
    return (str(src_file), corpus.src, corpus.tgt, str(dataset_file(name, "dev.align.sure")),
            str(dataset_file(name, "dev.align")))


def cmd_align_corpus(args: argparse.Namespace) -> int:
    """Align the config's training split with eflomal (both directions, grow-diag-final-and)
    into ``--output``, one Pharaoh line per training pair (what ``data.train.alignments``
    reads); the file appears only once complete."""
    import os
    import tempfile
    import time

    from heedful.analysis.statistical_aligner import align_files, find_aligner
    from heedful.cli.train import config_from_args
    from heedful.data import parse_chunk, split_chunks, split_origin

    config = config_from_args(args)
    if config.data.source != "text":
        raise ConfigError(f"align-corpus aligns source and target words; data.source is "
                          f"{config.data.source} (there is no source text)")
    find_aligner()  # before writing anything
    out = Path(args.output)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".align-corpus-", dir=out.parent or ".") as tmp:
        work = Path(tmp)
        src, tgt = work / "train.src", work / "train.tgt"
        pairs = 0
        with open(src, "w", encoding="utf-8") as s_out, open(tgt, "w", encoding="utf-8") as t_out:
            for chunk in split_chunks(config.data, "train"):
                seg = parse_chunk(chunk)
                s_out.writelines(line + "\n" for line in seg.src)
                t_out.writelines(line + "\n" for line in seg.tgt)
                pairs += len(seg.src)
        if pairs == 0:
            raise DataError(f"empty corpus: the train split ({split_origin(config.data, 'train')})"
                            " has no segments")
        written = align_files(src, tgt, work / "links", work, args.model)
        os.replace(work / "links", out)
    summary = {"pairs": written, "output": str(out), "model": args.model,
               "seconds": round(time.monotonic() - start, 1)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"aligned {written} training pairs with eflomal (model {args.model}) in "
              f"{summary['seconds']} s: {out}")
    return 0
