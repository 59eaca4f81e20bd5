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
    p.add_argument("--quantize", choices=["int8"],
                   help="dynamic int8 quantization of the model for CPU inference")
    g = p.add_argument_group("decoding (defaults: the run's decode config)")
    g.add_argument("--beam-size", type=int, dest="beam_size")
    g.add_argument("--n-best", type=int, dest="n_best")
    g.add_argument("--length-penalty", type=float, dest="length_penalty")
    g.add_argument("--beam-stop", choices=["certain", "top_finished"], dest="beam_stop",
                   help="certain: until no beam can beat the finished ones; top_finished: "
                        "when the best candidate ends (the peers' rule, faster)")
    g.add_argument("--max-len-a", type=float, dest="max_len_a")
    g.add_argument("--max-len-b", type=int, dest="max_len_b")
    g.add_argument("--batch-size", type=int, dest="batch_size")
    g.add_argument("--sample", action="store_const", const=True, default=None,
                   help="sample tokens (with --temperature, --top-k, --top-p, --seed)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int, dest="top_k")
    g.add_argument("--top-p", type=float, dest="top_p")
    g.add_argument("--repetition-penalty", type=float, dest="repetition_penalty")
    g.add_argument("--no-repeat-ngram-size", type=int, dest="no_repeat_ngram_size")
    g.add_argument("--seed", type=int)


def _add_align_options(p: argparse.ArgumentParser) -> None:
    from heedful.analysis.word_alignment import METHODS

    g = p.add_argument_group("alignment extraction (defaults: RUN_DIR/alignment.json if tuned, "
                             "else argmax over the last layer's mean head)")
    g.add_argument("--method", choices=METHODS)
    g.add_argument("--align-layer", dest="align_layer", help="layer index or 'mean'")
    g.add_argument("--align-head", dest="align_head", help="head index or 'mean'")
    g.add_argument("--shift", type=int, choices=[0, 1],
                   help="0: the step predicting a word; 1: the step reading it")
    g.add_argument("--threshold", type=float, help="for --method threshold")


def _layer_or_mean(value: str, option: str) -> int | None:
    if value == "mean":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: give an index or 'mean'") from None


def _align_settings(args: argparse.Namespace, run_dir: Path) -> Any:
    from dataclasses import replace

    from heedful.analysis.attention_alignment import AlignSettings, load_settings

    settings = load_settings(run_dir) or AlignSettings()
    updates: dict[str, Any] = {}
    if args.method:
        updates["method"] = args.method
    if args.align_layer is not None:
        updates["layer"] = _layer_or_mean(args.align_layer, "--align-layer")
    if args.align_head is not None:
        updates["head"] = _layer_or_mean(args.align_head, "--align-head")
    if args.shift is not None:
        updates["shift"] = args.shift
    if args.threshold is not None:
        updates["threshold"] = args.threshold
    return replace(settings, **updates)


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("beam_size", "n_best", "length_penalty", "beam_stop", "max_len_a", "max_len_b",
            "batch_size",
            "sample", "temperature", "top_k", "top_p", "repetition_penalty",
            "no_repeat_ngram_size", "seed")
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
    p.add_argument("run_dir", nargs="+",
                   help="run directory or shipped model name; several = an ensemble")
    p.add_argument("--input", "-i")
    p.add_argument("--output", "-o")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_decode_options(p)

    p = sub.add_parser("evaluate", help="BLEU and chrF on a split or on given files")
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
    _add_align_options(p)
    _add_decode_options(p)

    p = sub.add_parser("compare", help="several runs on one by-length table and plot")
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
    _add_decode_options(p)

    p = sub.add_parser("align", help="word alignments from attention (Pharaoh i-j to stdout)")
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
    _add_align_options(p)

    p = sub.add_parser("score", help="log-probability of given pairs under the model")
    p.add_argument("run_dir")
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("-o", "--output")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("attention", help="plot the attention of one translation")
    p.add_argument("run_dir")
    p.add_argument("sentence")
    p.add_argument("-o", "--output", default="attention.png")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean of heads)")
    p.add_argument("--layer", type=int, default=-1, help="decoder layer (default: the last)")
    p.add_argument("--grid", action="store_true", help="every layer and head as a grid")
    p.add_argument("--html", help="also write a self-contained interactive HTML page here")
    _add_decode_options(p)

    p = sub.add_parser("quickstart", help="train on the bundled corpus within a time budget")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("export", help="write a run's best model as a new inference-only run dir")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--format", choices=["heedful", "ctranslate2"], default="heedful",
                   help="heedful: an inference-only run dir; ctranslate2: a CTranslate2 model "
                        "(Transformers only)")
    p.add_argument("--float32", action="store_true", help="keep float32 (default: float16)")
    p.add_argument("--quantization", help="ctranslate2 only: e.g. int8, int8_float32, float16")

    p = sub.add_parser("serve", help="serve models over HTTP with a web page showing attention")
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

    p = sub.add_parser("average", help="average a run's last N checkpoints into a new run dir")
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, required=True, help="how many checkpoints")
    p.add_argument("-o", "--output", help="new run directory (default RUN_DIR-avgN)")

    p = sub.add_parser("data", help="build a corpus: debian-desc (summarization) or "
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

    p = sub.add_parser("metrics", help="BLEU/chrF (and ROUGE, distinct-n) of a hypothesis "
                                       "file against references")
    p.add_argument("hypotheses")
    p.add_argument("references")
    p.add_argument("--rouge", action="store_true", help="also ROUGE-1/2/L F1")
    p.add_argument("--distinct", action="store_true", help="also distinct-1/2")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("baseline", help="extractive summarization baselines: stdin -> stdout")
    p.add_argument("kind", choices=["first-sentence", "first-words"])
    p.add_argument("-n", type=int, default=10, help="first-words: how many (default 10)")
    p.add_argument("--input", "-i")
    p.add_argument("--output", "-o")

    p = sub.add_parser("chat", help="talk to a dialogue model (stdin lines; /reset, /quit)")
    p.add_argument("run_dir")
    p.add_argument("--context-turns", type=int, default=2,
                   help="turns (yours and the model's) the model sees (default 2)")
    p.add_argument("--separator", default="<sep>")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per reply, with the context the model saw")
    _add_decode_options(p)

    p = sub.add_parser("bench", help="training/decoding speed on the peers' two configurations")
    p.add_argument("--only", choices=["rnn", "transformer"], action="append",
                   help="one configuration (repeatable; default both)")
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
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training arithmetic: fp32 (default, as the peers on a CPU) or bf16 "
                        "autocast (as train.precision=bf16)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--profile", metavar="FILE",
                   help="also profile 5 updates (torch.profiler); top ops written to FILE")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--json", action="store_true")

    sub.add_parser("presets", help="list the named presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from heedful.runtime.allocator import bound_kernel_caches, retain_freed_memory

    retain_freed_memory()  # this process is ours: reuse freed memory (see heedful.runtime.allocator)
    bound_kernel_caches()
    from heedful.runtime.gemm import requested_backend

    try:  # a bad setting stops here, not in the middle of a training run
        requested_backend()
    except ValueError as err:
        print(f"heedful: error: {err}", file=sys.stderr)
        return 2
    code = _run_command(args)
    from heedful.training import distributed

    if argv is None and distributed.joined_process_group():
        distributed.exit_now(code)  # a torchrun worker: see exit_now for why
    return code


def _run_command(args: argparse.Namespace) -> int:
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
    from heedful.training.trainer import TrainError, train

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
    from heedful.decoding.translator import Translator

    translator = Translator.from_checkpoints(args.run_dir)
    if getattr(args, "quantize", None):
        translator.quantize(args.quantize)
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

    from heedful.analysis.by_length import by_length, format_table, plot_by_length
    from heedful.analysis.metrics import score_corpus
    from heedful.decoding.translator import Translator, resolve_run_dir

    edges = _edges(args.buckets) if args.by_length else ()
    translator = Translator.from_checkpoints(args.run_dir)
    if getattr(args, "quantize", None):
        translator.quantize(args.quantize)
    src, ref = _eval_files(args, translator)
    gold = None
    if args.align:  # read the gold first: a bad file fails before minutes of decoding
        gold = (_read_gold(args.align, len(src), "sure"),
                _read_gold(args.align_possible, len(src), "possible")
                if args.align_possible else None)
    start = time.perf_counter()
    results = translator.translate(src, progress=not args.json, **_decode_kwargs(args))
    seconds = time.perf_counter() - start
    hyps = [r.text for r in results]
    if args.hyp_output:
        Path(args.hyp_output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    scores = score_corpus(hyps, ref)
    opts = translator.decode_options(**_decode_kwargs(args))
    report: dict[str, Any] = {
        **scores.as_dict(), "beam_size": opts.beam_size, "decode_seconds": round(seconds, 2),
        "sentences_per_second": round(len(src) / seconds, 2)}
    report.update(_output_metrics(args, hyps, ref))
    if args.perplexity:
        report["perplexity"] = _perplexity(translator, src, ref)
    if not args.json:
        print(f"BLEU  {scores.bleu:6.2f}   {scores.bleu_signature}")
        print(f"chrF  {scores.chrf:6.2f}   {scores.chrf_signature}")
        if args.rouge:
            r = report["rouge"]
            print(f"ROUGE-1 {r['rouge1']:.2f}  ROUGE-2 {r['rouge2']:.2f}  ROUGE-L "
                  f"{r['rougeL']:.2f}   (F1 x 100, rouge-score, stemmed)")
        if args.distinct:
            print(f"distinct-1 {report['distinct_1']:.4f}  distinct-2 {report['distinct_2']:.4f}")
        if args.perplexity:
            print(f"perplexity {report['perplexity']:.2f} (references, per subword incl. EOS)")
        print(f"{len(src)} sentences, beam {opts.beam_size}, {seconds:.1f} s "
              f"({report['sentences_per_second']} sent/s)")
    if args.by_length:
        buckets = by_length(src, hyps, ref, edges, samples=args.bootstrap)
        report["by_length"] = [b.as_dict() for b in buckets]
        if not args.json:
            print()
            print(format_table(buckets, "by source length (95% bootstrap intervals):"))
        if args.plot:
            label = "+".join(Path(r).name for r in args.run_dir)
            path = plot_by_length({label: buckets}, args.plot)
            report["plot"] = str(path)
            if not args.json:
                print(f"plot written to {path}")
    if gold is not None:
        report["alignment"] = _alignment_report(args, translator, resolve_run_dir(args.run_dir[0]),
                                                src, ref, *gold)
        if not args.json:
            a = report["alignment"]
            print()
            print(f"alignment ({a['settings']}), {a['sentences']} sentences:")
            print(f"  all links:        AER {a['aer']:.3f}  precision {a['precision']:.3f}  "
                  f"recall {a['recall']:.3f}  ({a['predicted_links']} links)")
            print(f"  restricted links: AER {a['aer_restricted']:.3f}  precision "
                  f"{a['precision_restricted']:.3f}  recall {a['recall']:.3f}  "
                  f"({a['predicted_links_restricted']} links)")
    if args.json:
        print(json.dumps(report))
    return 0


def _output_metrics(args: argparse.Namespace, hyps: list[str], refs: list[str]
                    ) -> dict[str, Any]:
    """The optional metrics of evaluate/metrics: ROUGE (--rouge), distinct-1/2 (--distinct)."""
    report: dict[str, Any] = {}
    if args.rouge:
        from heedful.analysis.metrics import score_rouge

        report["rouge"] = score_rouge(hyps, refs)
    if args.distinct:
        from heedful.decoding.chat import distinct_n

        report["distinct_1"] = round(distinct_n(hyps, 1), 4)
        report["distinct_2"] = round(distinct_n(hyps, 2), 4)
    return report


def _perplexity(translator: Any, src: list[str], ref: list[str]) -> float:
    """exp(- mean log-probability per reference subword, EOS included)."""
    import math

    from heedful.decoding.forced import force_decode

    tok = translator.tokenizer
    results = force_decode(translator.model, tok.encode_src(src), tok.encode_tgt(ref))
    total = sum(r.log_prob for r in results)
    count = sum(r.num_tokens for r in results)
    return round(math.exp(-total / max(count, 1)), 3)


def _edges(text: str) -> tuple[int, ...]:
    from heedful.analysis.by_length import parse_edges

    try:
        return parse_edges(text)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _read_gold(path: str, expected: int, what: str) -> list[Any]:
    from heedful.analysis.word_alignment import read_alignments

    gold = read_alignments(path)
    if len(gold) != expected:
        raise DataError(f"{path}: {len(gold)} lines of {what} links for {expected} sentences")
    return gold


def _alignment_report(args: argparse.Namespace, translator: Any, run_dir: Path,
                      src: list[str], ref: list[str], sure: list[Any],
                      possible: list[Any] | None) -> dict[str, Any]:
    from heedful.analysis.attention_alignment import check_settings, pair_attention
    from heedful.analysis.word_alignment import alignment_scores

    settings = _align_settings(args, run_dir)
    pairs = pair_attention(translator, src, ref, progress=not args.json)
    check_settings(settings, pairs)
    predicted = [p.links(settings) for p in pairs]
    return {"settings": settings.describe(),
            **alignment_scores(predicted, sure, possible).as_dict()}


def _cmd_compare(args: argparse.Namespace) -> int:
    from heedful.analysis.by_length import by_length, plot_by_length
    from heedful.analysis.metrics import score_corpus
    from heedful.decoding.translator import Translator

    edges = _edges(args.buckets)
    labels = (args.labels.split(",") if args.labels
              else [Path(r).name for r in args.run_dirs])
    if len(labels) != len(args.run_dirs):
        raise ConfigError(f"--labels names {len(labels)} runs but {len(args.run_dirs)} were given")
    curves: dict[str, Sequence[Any]] = {}
    rows: list[dict[str, Any]] = []
    for label, run in zip(labels, args.run_dirs, strict=True):
        translator = Translator.from_checkpoint(run)
        if getattr(args, "quantize", None):
            translator.quantize(args.quantize)
        src, ref = _eval_files(args, translator)
        hyps = translator.translate_lines(src, progress=not args.json, **_decode_kwargs(args))
        overall = score_corpus(hyps, ref)
        buckets = by_length(src, hyps, ref, edges, samples=args.bootstrap)
        curves[label] = buckets
        rows.append({"run": label, "run_dir": run, "bleu": overall.bleu, "chrf": overall.chrf,
                     "by_length": [b.as_dict() for b in buckets]})
    path = plot_by_length(curves, args.plot, args.metric)
    if args.json:
        print(json.dumps({"runs": rows, "plot": str(path)}))
        return 0
    bucket_labels = [b.label for b in next(iter(curves.values()))]
    metric = args.metric
    print(f"{metric.upper() if metric == 'bleu' else 'chrF'} by source length (words); "
          "n = sentences per bucket")
    header = f"{'run':20s} {'all':>6s} " + " ".join(f"{b:>8s}" for b in bucket_labels)
    print(header)
    counts = [b.sentences for b in next(iter(curves.values()))]
    print(f"{'n':20s} {'':6s} " + " ".join(f"{n:8d}" for n in counts))
    for row, (label, curve) in zip(rows, curves.items(), strict=True):
        cells = " ".join(f"{getattr(b, metric):8.2f}" if getattr(b, metric) is not None
                         else f"{'-':>8s}" for b in curve)
        print(f"{label:20s} {row[metric]:6.2f} {cells}")
    print(f"plot written to {path}")
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    from heedful.analysis.attention_alignment import (
        check_settings,
        pair_attention,
        save_settings,
        tune,
    )
    from heedful.analysis.word_alignment import format_links
    from heedful.decoding.translator import Translator, resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    translator = Translator.from_checkpoint(run_dir)
    if getattr(args, "quantize", None):
        translator.quantize(args.quantize)
    if args.tune:
        dev_name, dev_src, dev_tgt, dev_sure, dev_possible = _dev_gold(args, translator)
        pairs = pair_attention(translator, dev_src, dev_tgt, progress=not args.json)
        sure = _read_gold(dev_sure, len(dev_src), "sure")
        possible = _read_gold(dev_possible, len(dev_src), "possible") if dev_possible else None
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
        if not (args.src or args.tgt):
            return 0
    if not (args.src and args.tgt):
        raise DataError("heedful align needs --src and --tgt (the pairs to align)")
    corpus = read_parallel(args.src, args.tgt)
    settings = _align_settings(args, run_dir)
    pairs = pair_attention(translator, corpus.src, corpus.tgt, progress=args.output is not None)
    check_settings(settings, pairs)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for p in pairs:
            links = p.links(settings)
            if args.json:
                out.write(json.dumps({"alignment": format_links(links),
                                      "src_words": p.num_src_words,
                                      "tgt_words": p.num_tgt_words}) + "\n")
            else:
                out.write(format_links(links) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _dev_gold(args: argparse.Namespace, translator: Any
              ) -> tuple[str, list[str], list[str], str, str | None]:
    """(source file, dev sources, dev targets, sure gold, possible gold) for --tune: given,
    or the bundled dataset's dev files."""
    if args.dev_src or args.dev_tgt or args.dev_align:
        if not (args.dev_src and args.dev_tgt and args.dev_align):
            raise DataError("--dev-src, --dev-tgt and --dev-align go together")
        corpus = read_parallel(args.dev_src, args.dev_tgt)
        return args.dev_src, corpus.src, corpus.tgt, args.dev_align, args.dev_align_possible
    from heedful.datasets import dataset_file, dataset_split

    name = translator.config.data.dataset
    if name is None or not dataset_file(name, "dev.align.sure").exists():
        raise DataError("--tune needs dev pairs with gold links: give --dev-src, --dev-tgt "
                        "and --dev-align (and --dev-align-possible)")
    src_file, tgt_file = dataset_split(name, "dev")
    corpus = read_parallel(src_file, tgt_file)
    return (str(src_file), corpus.src, corpus.tgt, str(dataset_file(name, "dev.align.sure")),
            str(dataset_file(name, "dev.align")))


def _cmd_score(args: argparse.Namespace) -> int:
    from heedful.decoding.forced import force_decode
    from heedful.decoding.translator import Translator

    translator = Translator.from_checkpoint(args.run_dir)
    corpus = read_parallel(args.src, args.tgt)
    tok = translator.tokenizer
    results = force_decode(translator.model, tok.encode_src(corpus.src),
                           tok.encode_tgt(corpus.tgt), progress=args.output is not None)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for r in results:
            if args.json:
                out.write(json.dumps({"log_prob": round(r.log_prob, 4),
                                      "per_token": round(r.per_token, 4),
                                      "tokens": r.num_tokens}) + "\n")
            else:
                out.write(f"{r.log_prob:.4f}\t{r.per_token:.4f}\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if results and args.output:
        total = sum(r.log_prob for r in results)
        ntok = sum(r.num_tokens for r in results)
        import math

        print(f"{len(results)} pairs, {ntok} target tokens: log-prob {total:.1f}, "
              f"{total / ntok:.4f} per token (perplexity {math.exp(-total / ntok):.2f})",
              file=sys.stderr)
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from heedful.analysis.plots import attention_html, plot_attention, plot_attention_grid
    from heedful.decoding.translator import Translator

    translator = Translator.from_checkpoint(args.run_dir)
    if getattr(args, "quantize", None):
        translator.quantize(args.quantize)
    result = translator.translate([args.sentence], return_attention=True, **_decode_kwargs(args))[0]
    if result.attention is None:
        raise CheckpointError(f"{args.run_dir}: this model has no attention to plot "
                              "(attention: none)")
    attention = result.attention.float()  # (T_out, L, H, S)
    _, layers, heads, _ = attention.shape
    if not -layers <= args.layer < layers:
        raise ConfigError(f"--layer {args.layer}: the model has {layers} layer(s)")
    if args.head is not None and not -heads <= args.head < heads:
        raise ConfigError(f"--head {args.head}: the model has {heads} head(s)")
    print(result.text)
    if args.grid:
        path = plot_attention_grid(attention.numpy(), result.src_pieces, result.tgt_pieces,
                                   args.output, title=result.text)
    else:
        attn = attention[:, args.layer]  # (T_out, H, S)
        weights = attn.mean(1) if args.head is None else attn[:, args.head]
        path = plot_attention(weights.numpy(), result.src_pieces, result.tgt_pieces,
                              args.output, title=result.text)
    print(f"attention heatmap written to {path}")
    if args.html:
        page = attention_html(attention.numpy(), result.src_pieces, result.tgt_pieces, args.html,
                              title=f"{args.sentence} → {result.text}")
        print(f"interactive page written to {page}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from heedful.quickstart import quickstart

    quickstart(minutes=args.minutes, run_dir=Path(args.run_dir), progress=not args.no_progress)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
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


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("heedful serve needs FastAPI and uvicorn: pip install "
                          "'heedful[serve]'") from None
    import torch

    from heedful.decoding.translator import Translator
    from heedful.serving.server import ServeSettings, create_app, parse_model_args

    if args.threads:
        torch.set_num_threads(args.threads)
    models = {name: Translator.from_checkpoint(path)
              for name, path in parse_model_args(args.run_dir, args.model).items()}
    settings = ServeSettings(max_texts=args.max_texts, max_chars=args.max_chars,
                             timeout_s=args.timeout, micro_batching=not args.no_micro_batching,
                             max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    app = create_app(models, settings)
    print(f"heedful: serving {', '.join(models)} on http://{args.host}:{args.port}/ "
          f"(micro-batching {'on' if settings.micro_batching else 'off'})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from heedful.checkpoint import average_run
    from heedful.decoding.translator import resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    out = Path(args.output or f"{run_dir}-avg{args.last}")
    ckpt = average_run(run_dir, out, args.last)
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    print(f"averaged {', '.join(state['averaged_checkpoints'])} into {out}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from heedful.corpora import CorpusBuildError, build_chatterbot_pairs, build_debian_summ

    try:
        if args.corpus == "debian-desc":
            out = Path(args.out or "data/debian-desc-summ")
            stats = build_debian_summ(out, Path(args.lists), args.pattern)
        else:
            out = Path(args.out or "data/chatterbot")
            stats = build_chatterbot_pairs(out, args.context_turns, args.language,
                                           args.separator)
    except CorpusBuildError as err:
        raise DataError(str(err)) from None
    if args.json:
        print(json.dumps(stats))
    else:
        pairs = stats["pairs"]
        assert isinstance(pairs, dict)
        print(f"{stats['corpus']}: " + ", ".join(f"{k} {v:,}" for k, v in pairs.items())
              + f" pairs written to {out}/ (statistics: {out}/stats.json)")
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from heedful.analysis.metrics import score_corpus

    corpus = read_parallel(args.hypotheses, args.references)
    hyps, refs = corpus.src, corpus.tgt
    scores = score_corpus(hyps, refs)
    report: dict[str, Any] = {**scores.as_dict(), **_output_metrics(args, hyps, refs)}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"BLEU  {scores.bleu:6.2f}   {scores.bleu_signature}")
    print(f"chrF  {scores.chrf:6.2f}   {scores.chrf_signature}")
    if args.rouge:
        r = report["rouge"]
        print(f"ROUGE-1 {r['rouge1']:.2f}  ROUGE-2 {r['rouge2']:.2f}  ROUGE-L {r['rougeL']:.2f}"
              "   (F1 x 100, rouge-score, stemmed)")
    if args.distinct:
        print(f"distinct-1 {report['distinct_1']:.4f}  distinct-2 {report['distinct_2']:.4f}")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from heedful.analysis.baselines import baseline

    if args.kind == "first-words" and args.n < 1:
        raise ConfigError(f"-n must be at least 1 (got {args.n})")
    lines = _read_input(args.input)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(baseline(args.kind, line, args.n) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from heedful.decoding.chat import ChatSession
    from heedful.decoding.translator import Translator

    if args.context_turns < 1:
        raise ConfigError(f"--context-turns must be at least 1 (got {args.context_turns})")
    translator = Translator.from_checkpoint(args.run_dir)
    if getattr(args, "quantize", None):
        translator.quantize(args.quantize)
    decode = _decode_kwargs(args)
    translator.decode_options(**decode)  # bad options fail before the first turn
    session = ChatSession(translator, args.context_turns, args.separator, decode)
    interactive = sys.stdin.isatty()
    if interactive:
        print("heedful chat: type a message; /reset starts a new conversation, /quit ends",
              file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            session.reset()
            if args.json:
                print(json.dumps({"reset": True}), flush=True)
            else:
                print("(new conversation)", file=sys.stderr, flush=True)
            continue
        context, reply = session.respond(text)
        if args.json:
            print(json.dumps({"context": context, "reply": reply}, ensure_ascii=False),
                  flush=True)
        else:
            print(("bot> " if interactive else "") + reply, flush=True)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from heedful.bench import BENCH_CONFIGS, format_table, run_isolated, run_one
    from heedful.runtime.precision import check_cpu_precision

    if not args.skip_training:
        try:
            check_cpu_precision(args.precision, key="--precision")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    names = args.only or list(BENCH_CONFIGS)
    models = {"rnn": args.rnn_model, "transformer": args.transformer_model}
    if len(names) == 1:  # this process measures it
        name = names[0]
        report = run_one(name, args.steps, args.warmup, args.threads, models[name],
                         args.test_limit, args.quantize, args.compile, args.profile,
                         args.skip_training, args.beam_stop, args.precision)
        reports = [report]
    else:  # one fresh process per configuration: separate peak RSS
        reports = []
        for name in names:
            argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads",
                    str(args.threads)]
            if models[name]:
                argv += [f"--{name}-model", models[name]]
            for flag, value in (("--test-limit", args.test_limit), ("--quantize", args.quantize),
                                ("--profile", f"{args.profile}.{name}" if args.profile
                                 else None)):
                if value is not None:
                    argv += [flag, str(value)]
            argv += ["--beam-stop", args.beam_stop, "--precision", args.precision,
                     *(["--compile"] if args.compile else [])]
            argv += ["--skip-training"] if args.skip_training else []
            reports.append(run_isolated(name, argv))
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0]))
    else:
        print(format_table(reports))
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
    "compare": _cmd_compare,
    "align": _cmd_align,
    "score": _cmd_score,
    "attention": _cmd_attention,
    "quickstart": _cmd_quickstart,
    "export": _cmd_export,
    "presets": _cmd_presets,
    "data": _cmd_data,
    "baseline": _cmd_baseline,
    "metrics": _cmd_metrics,
    "bench": _cmd_bench,
    "chat": _cmd_chat,
    "serve": _cmd_serve,
    "average": _cmd_average,
}
