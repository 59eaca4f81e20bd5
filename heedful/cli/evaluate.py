"""``heedful evaluate``, ``compare``, ``metrics`` and ``baseline``: measure outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heedful.cli.options import (
    add_align_options,
    add_decode_options,
    add_device_options,
    align_settings,
    decode_overrides,
)
from heedful.cli.streams import output, read_input
from heedful.cli.translate import load_translator
from heedful.errors import ConfigError, DataError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers

LOWERCASE_HELP = ("also BLEU of lowercased text (sacrebleu -lc), as papers on Multi30k and "
                  "IWSLT report it")


def register(subparsers: Subparsers) -> None:
    """Add ``evaluate``, ``compare``, ``metrics`` and ``baseline``."""
    _add_evaluate(subparsers)
    _add_compare(subparsers)

    p = subparsers.add_parser("metrics", help="BLEU/chrF (and ROUGE, distinct-n) of a "
                                              "hypothesis file against references")
    p.add_argument("hypotheses")
    p.add_argument("references")
    p.add_argument("--rouge", action="store_true", help="also ROUGE-1/2/L F1")
    p.add_argument("--distinct", action="store_true", help="also distinct-1/2")
    p.add_argument("--lowercase-bleu", action="store_true", help=LOWERCASE_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)

    p = subparsers.add_parser("baseline", help="extractive summarization baselines: stdin -> "
                                               "stdout")
    p.add_argument("kind", choices=["first-sentence", "first-words"])
    p.add_argument("-n", type=int, default=10, help="first-words: how many (default 10)")
    p.add_argument("--input", "-i")
    p.add_argument("--output", "-o")
    p.set_defaults(func=cmd_baseline)


def _add_evaluate(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="BLEU and chrF on a split or on given files "
                                               "(CER, WER and exact match for image runs)")
    p.add_argument("run_dir", nargs="+", help="run directory; several = an ensemble")
    p.add_argument("--split", choices=["dev", "test"], default=None)
    p.add_argument("--src")
    p.add_argument("--ref")
    p.add_argument("--hyp-output", help="also write the translations here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rouge", action="store_true",
                   help="also ROUGE-1/2/L F1 (summarization; needs rouge-score)")
    p.add_argument("--distinct", action="store_true",
                   help="also distinct-1/2 of the outputs (dialogue diversity)")
    p.add_argument("--perplexity", action="store_true",
                   help="also the references' perplexity under the model (per subword)")
    p.add_argument("--lowercase-bleu", action="store_true", help=LOWERCASE_HELP)
    g = p.add_argument_group("quality by source length")
    g.add_argument("--by-length", action="store_true",
                   help="BLEU/chrF per source-length bucket with 95%% bootstrap intervals")
    g.add_argument("--buckets", default="10,20,30,40",
                   help="bucket edges in source words (default 10,20,30,40: 1-10 ... 41+)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    g.add_argument("--plot", help="write the by-length curve as a PNG here")
    g = p.add_argument_group("alignment quality (force-decodes the references)")
    g.add_argument("--align", metavar="GOLD",
                   help="gold sure links (Pharaoh i-j, one line per sentence)")
    g.add_argument("--align-possible", metavar="GOLD2", help="gold possible links")
    add_align_options(p)
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_evaluate)


def _add_compare(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("compare", help="several runs on one by-length table and plot")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--labels", help="comma-separated names for the runs (default: dir names)")
    p.add_argument("--split", choices=["dev", "test"], default=None)
    p.add_argument("--src")
    p.add_argument("--ref")
    p.add_argument("--buckets", default="10,20,30,40")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--plot", default="compare.png", help="PNG of the curves (default %(default)s)")
    p.add_argument("--metric", choices=["bleu", "chrf"], default="bleu")
    p.add_argument("--json", action="store_true")
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_compare)


def eval_files(args: argparse.Namespace, translator: Any) -> tuple[list[str], list[str]]:
    """(sources, references): --src/--ref, else the run's --split (default test)."""
    from heedful.data import load_split, read_parallel

    if args.src or args.ref:
        if not (args.src and args.ref):
            raise DataError("--src and --ref go together")
        corpus = read_parallel(args.src, args.ref)
        return corpus.src, corpus.tgt
    split = load_split(translator.config.data, args.split or "test")
    if split is None:
        raise DataError(f"the run's config has no {args.split or 'test'} split; use --src/--ref")
    return split.src, split.tgt


def parse_buckets(text: str) -> tuple[int, ...]:
    """--buckets ``10,20,30,40`` -> (10, 20, 30, 40); a bad value is a ConfigError."""
    from heedful.analysis.by_length import parse_edges

    try:
        return parse_edges(text)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Translate a split (or --src) and print BLEU/chrF against the references, with the
    optional ROUGE, distinct-n, perplexity, by-length and alignment figures."""
    from heedful.analysis.reports import evaluate_report, format_evaluate, read_gold
    from heedful.decoding.translator import resolve_run_dir

    translator = load_translator(args.run_dir, args.quantize, args.device, args.precision)
    if translator.config.data.source != "text":
        return _evaluate_transcriber(args, translator)
    edges = parse_buckets(args.buckets) if args.by_length else None
    src, ref = eval_files(args, translator)
    alignment = None
    if args.align:  # read the gold first: a bad file fails before minutes of decoding
        sure = read_gold(args.align, len(src), "sure")
        possible = (read_gold(args.align_possible, len(src), "possible")
                    if args.align_possible else None)
        alignment = (align_settings(args, resolve_run_dir(args.run_dir[0])), sure, possible)
    report = evaluate_report(
        translator, src, ref, decode_overrides(args), rouge=args.rouge, distinct=args.distinct,
        with_perplexity=args.perplexity, edges=edges, bootstrap=args.bootstrap, plot=args.plot,
        plot_label="+".join(Path(r).name for r in args.run_dir), alignment=alignment,
        hyp_output=args.hyp_output, progress=not args.json, lowercase_bleu=args.lowercase_bleu)
    print(json.dumps(report) if args.json else format_evaluate(report))
    return 0


def _evaluate_transcriber(args: argparse.Namespace, transcriber: Any) -> int:
    """``evaluate`` of an image run: CER, WER and exact match of a split's manifest (or of
    the manifest ``--src``), by target length with ``--by-length``."""
    from heedful.analysis.transcription import format_transcription, transcription_report
    from heedful.manifest import manifest_path, read_manifest

    text_only = [flag for flag, on in (("--ref", args.ref), ("--rouge", args.rouge),
                                       ("--distinct", args.distinct),
                                       ("--perplexity", args.perplexity),
                                       ("--lowercase-bleu", args.lowercase_bleu),
                                       ("--align", args.align), ("--plot", args.plot)) if on]
    if text_only:
        raise ConfigError(f"{', '.join(text_only)}: for runs that translate text; this run "
                          "reads images (--src takes a manifest, whose lines hold the "
                          "references)")
    config = transcriber.config
    path = Path(args.src) if args.src else manifest_path(config.data.dir,
                                                         args.split or "test")
    entries = read_manifest(path)
    report = transcription_report(transcriber, [str(e.path) for e in entries],
                                  [e.target for e in entries], decode_overrides(args),
                                  by_length=args.by_length, hyp_output=args.hyp_output,
                                  progress=not args.json)
    report["manifest"] = str(path)
    print(json.dumps(report) if args.json else format_transcription(report))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Evaluate several runs on the same sentences: one table of BLEU (or chrF) per
    source-length bucket, and one plot of the curves."""
    from heedful.analysis.reports import compare_row, format_compare, plot_compare

    edges = parse_buckets(args.buckets)
    labels = (args.labels.split(",") if args.labels
              else [Path(r).name for r in args.run_dirs])
    if len(labels) != len(args.run_dirs):
        raise ConfigError(f"--labels names {len(labels)} runs but {len(args.run_dirs)} were given")
    rows: list[dict[str, Any]] = []
    for label, run in zip(labels, args.run_dirs, strict=True):
        translator = load_translator(run, args.quantize, args.device, args.precision)
        src, ref = eval_files(args, translator)
        rows.append(compare_row(translator, label, run, src, ref, edges,
                                decode_overrides(args), args.bootstrap, progress=not args.json))
    path = plot_compare(rows, args.plot, args.metric)
    if args.json:
        print(json.dumps({"runs": rows, "plot": str(path)}))
        return 0
    print(format_compare(rows, args.metric))
    print(f"plot written to {path}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    """BLEU/chrF (and optionally ROUGE and distinct-n) of a hypothesis file against a
    reference file, line by line."""
    from heedful.analysis.reports import format_metrics, metrics_report
    from heedful.data import read_parallel

    corpus = read_parallel(args.hypotheses, args.references)
    report = metrics_report(corpus.src, corpus.tgt, args.rouge, args.distinct,
                            args.lowercase_bleu)
    print(json.dumps(report) if args.json else "\n".join(format_metrics(report)))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """An extractive summary of each input line (its first sentence or first -n words)."""
    from heedful.analysis.baselines import baseline

    if args.kind == "first-words" and args.n < 1:
        raise ConfigError(f"-n must be at least 1 (got {args.n})")
    lines = read_input(args.input)
    with output(args.output) as out:
        for line in lines:
            out.write(baseline(args.kind, line, args.n) + "\n")
    return 0
