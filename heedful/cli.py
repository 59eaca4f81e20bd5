"""The ``heedful`` console script: parse arguments, call a library function, print.

Every error the product promises (bad corpus, bad config, bad checkpoint) is reported as one
``heedful: error: ...`` line on stderr with exit status 2 — never a Python traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heedful.checkpoint import CheckpointError
from heedful.config import Config, ConfigError, load_config
from heedful.data import DataError, decode_lines, read_lines, read_parallel

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, CheckpointError, KeyError)


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults: the run's decode config)")
    g.add_argument("--beam-size", type=int, dest="beam_size")
    g.add_argument("--n-best", type=int, dest="n_best")
    g.add_argument("--length-penalty", type=float, dest="length_penalty")
    g.add_argument("--max-len-a", type=float, dest="max_len_a")
    g.add_argument("--max-len-b", type=int, dest="max_len_b")
    g.add_argument("--batch-size", type=int, dest="batch_size")


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("beam_size", "n_best", "length_penalty", "max_len_a", "max_len_b", "batch_size")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heedful", description="Sequence-to-sequence models with attention.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config (optional with --preset/--resume)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.hidden_dim=256")
    p.add_argument("--preset", help="start from a named preset (see `heedful presets`)")
    p.add_argument("--run-dir", help="where checkpoints and logs go (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--init-from", help="initialise weights from a trained run (fine-tuning)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("translate", help="translate stdin (or --input) to stdout")
    p.add_argument("run_dir", help="run directory or shipped model name")
    p.add_argument("--input", "-i")
    p.add_argument("--output", "-o")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_decode_options(p)

    p = sub.add_parser("evaluate", help="BLEU and chrF on a split or on given files")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["dev", "test"], default=None)
    p.add_argument("--src")
    p.add_argument("--ref")
    p.add_argument("--hyp-output", help="also write the translations here")
    p.add_argument("--json", action="store_true")
    _add_decode_options(p)

    p = sub.add_parser("attention", help="plot the attention of one translation")
    p.add_argument("run_dir")
    p.add_argument("sentence")
    p.add_argument("-o", "--output", default="attention.png")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean of heads)")
    _add_decode_options(p)

    p = sub.add_parser("quickstart", help="train on the bundled corpus within a time budget")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("export", help="write a run's best model as a new inference-only run dir")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--format", choices=["heedful"], default="heedful")
    p.add_argument("--float32", action="store_true", help="keep float32 (default: float16)")

    sub.add_parser("presets", help="list the named presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"heedful: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("heedful: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from heedful.presets import get_preset
    from heedful.train import TrainError, train

    base: Config | None = get_preset(args.preset) if args.preset else None
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
        config = load_config(saved if saved.exists() else None, overrides)
    else:
        config = load_config(config_path, overrides, base=base)
    run_dir = Path(args.run_dir or f"runs/{config.name if config else 'heedful'}")
    try:
        result = train(config, run_dir, resume=args.resume, init_from=args.init_from,
                       progress=not args.no_progress)
    except TrainError as err:
        print(f"heedful: error: {err}", file=sys.stderr)
        return 2
    print(f"stopped after {result.steps} steps ({result.stopped_because}); "
          f"best dev score {result.best_score}; best checkpoint {result.best_checkpoint}")
    return 0


def _read_input(path: str | None) -> list[str]:
    if path is None:
        return decode_lines(sys.stdin.buffer.read(), "<stdin>")
    return read_lines(path)


def _cmd_translate(args: argparse.Namespace) -> int:
    from heedful.translator import Translator

    translator = Translator.from_checkpoint(args.run_dir)
    lines = _read_input(args.input)
    results = translator.translate(lines, progress=args.output is not None, **_decode_kwargs(args))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for r in results:
            if args.json:
                out.write(json.dumps({"translation": r.text, "score": round(r.score, 4),
                                      "n_best": [{"translation": t, "score": round(s, 4)}
                                                 for t, s in r.n_best]},
                                     ensure_ascii=False) + "\n")
            elif args.n_best and args.n_best > 1:
                out.write(" ||| ".join(f"{t} ({s:.3f})" for t, s in r.n_best) + "\n")
            else:
                out.write(r.text + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _eval_files(args: argparse.Namespace, translator: Any) -> tuple[list[str], list[str]]:
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise DataError("--src and --ref go together")
        corpus = read_parallel(args.src, args.ref)
        return corpus.src, corpus.tgt
    from heedful.data import load_split

    split = load_split(translator.config.data, args.split or "test")
    if split is None:
        raise DataError(f"the run's config has no {args.split or 'test'} split; use --src/--ref")
    return split.src, split.tgt


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from heedful.evaluate import score_corpus
    from heedful.translator import Translator

    translator = Translator.from_checkpoint(args.run_dir)
    src, ref = _eval_files(args, translator)
    start = time.perf_counter()
    results = translator.translate(src, progress=not args.json, **_decode_kwargs(args))
    seconds = time.perf_counter() - start
    hyps = [r.text for r in results]
    if args.hyp_output:
        Path(args.hyp_output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    scores = score_corpus(hyps, ref)
    opts = translator.decode_options(**_decode_kwargs(args))
    report = {**scores.as_dict(), "beam_size": opts.beam_size, "decode_seconds": round(seconds, 2),
              "sentences_per_second": round(len(src) / seconds, 2)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"BLEU  {scores.bleu:6.2f}   {scores.bleu_signature}")
        print(f"chrF  {scores.chrf:6.2f}   {scores.chrf_signature}")
        print(f"{len(src)} sentences, beam {opts.beam_size}, {seconds:.1f} s "
              f"({report['sentences_per_second']} sent/s)")
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from heedful.translator import Translator
    from heedful.viz import plot_attention

    translator = Translator.from_checkpoint(args.run_dir)
    result = translator.translate([args.sentence], return_attention=True, **_decode_kwargs(args))[0]
    if result.attention is None:
        raise CheckpointError(f"{args.run_dir}: this model has no attention to plot "
                              "(attention: none)")
    attn = result.attention[:, -1]  # last layer: (T_out, H, S)
    weights = attn.mean(1) if args.head is None else attn[:, args.head]
    path = plot_attention(weights.numpy(), result.src_pieces, result.tgt_pieces, args.output,
                          title=result.text)
    print(result.text)
    print(f"attention heatmap written to {path}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from heedful.quickstart import quickstart

    quickstart(minutes=args.minutes, run_dir=Path(args.run_dir), progress=not args.no_progress)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from heedful.checkpoint import export_run
    from heedful.translator import resolve_run_dir

    ckpt = export_run(resolve_run_dir(args.run_dir), Path(args.out_dir), half=not args.float32)
    size = sum(p.stat().st_size for p in Path(args.out_dir).rglob("*") if p.is_file())
    print(f"exported {ckpt} ({size / 1e6:.1f} MB)")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from heedful.presets import PRESETS

    for name, fn in PRESETS.items():
        doc = " ".join((fn.__doc__ or "").split())
        print(f"{name:16s} {doc}")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "translate": _cmd_translate,
    "evaluate": _cmd_evaluate,
    "attention": _cmd_attention,
    "quickstart": _cmd_quickstart,
    "export": _cmd_export,
    "presets": _cmd_presets,
}
