"""``heedful translate``, ``score``, ``attention`` and ``chat``: run a model on text."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from heedful.cli.options import (
    SKIP_BAD_HELP,
    add_decode_options,
    add_device_options,
    decode_overrides,
)
from heedful.cli.streams import closing_bar, iter_constraints, iter_input, output, pair_lines
from heedful.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``translate``, ``score``, ``attention`` and ``chat``."""
    p = subparsers.add_parser("translate", help="translate stdin (or --input) to stdout")
    p.add_argument("run_dir", nargs="+",
                   help="run directory or shipped model name; several = an ensemble")
    p.add_argument("--input", "-i")
    p.add_argument("--output", "-o")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--skip-bad-lines", action="store_true", help=SKIP_BAD_HELP)
    p.add_argument("--constraints", metavar="FILE",
                   help="one JSON list of target phrases per input line, e.g. "
                        '["green herb"] ([] for none): each must appear in its translation '
                        "(lexically constrained beam search)")
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_translate)

    p = subparsers.add_parser("score", help="log-probability of given pairs under the model")
    p.add_argument("run_dir")
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("-o", "--output")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--skip-bad-lines", action="store_true", help=SKIP_BAD_HELP)
    add_device_options(p, precision=False)
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("attention", help="plot the attention of one translation (or "
                                                "transcription: the image with overlays)")
    p.add_argument("run_dir")
    p.add_argument("sentence", help="the source sentence (an image or WAV file for image or "
                                    "audio runs)")
    p.add_argument("-o", "--output", default="attention.png")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean of heads)")
    p.add_argument("--layer", type=int, default=-1, help="decoder layer (default: the last)")
    p.add_argument("--grid", action="store_true", help="every layer and head as a grid")
    p.add_argument("--html", help="also write a self-contained interactive HTML page here")
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_attention)

    p = subparsers.add_parser("chat", help="talk to a dialogue model (stdin lines; /reset, "
                                           "/quit)")
    p.add_argument("run_dir")
    p.add_argument("--context-turns", type=int, default=2,
                   help="turns (yours and the model's) the model sees (default 2)")
    p.add_argument("--separator", default="<sep>")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per reply, with the context the model saw")
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_chat)


def load_translator(run_dirs: str | list[str], quantize: str | None = None,
                    device: str = "auto", precision: str = "fp32",
                    text_for: str | None = None) -> Any:
    """A translator for one run directory (or shipped model), or an ensemble of several, on
    ``device`` in ``precision``, quantized when ``quantize`` is given (int8 dynamic
    quantization runs on the CPU, so ``auto`` means the CPU then). ``text_for``: the command
    that needs a model of source text (refused by name for an image model)."""
    from heedful.decoding.translator import Translator
    from heedful.runtime.device import resolve_device

    target = resolve_device("cpu" if quantize and device == "auto" else device)
    translator = (Translator.from_checkpoints(run_dirs, device=target, precision=precision)
                  if isinstance(run_dirs, list)
                  else Translator.from_checkpoint(run_dirs, device=target, precision=precision))
    source = translator.config.data.source
    if text_for is not None and source != "text":
        raise ConfigError(f"{text_for} needs a model that reads text; {run_dirs} reads "
                          f"{source}s (data.source: {source}): use heedful transcribe or "
                          "heedful evaluate")
    if quantize:
        translator.quantize(quantize)
    return translator


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate the lines of --input (or stdin), one output line (or JSON object) each,
    streaming: a chunk of lines at a time, each written as soon as its chunk is done."""
    translator = load_translator(args.run_dir, args.quantize, args.device, args.precision)
    constraints = None if args.constraints is None else iter_constraints(args.constraints)
    results = translator.translate_stream(iter_input(args.input, args.skip_bad_lines),
                                          progress=args.output is not None,
                                          constraints=constraints, **decode_overrides(args))
    with output(args.output) as out:
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
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Print the log-probability (total and per token) of each given pair under the model,
    one output line per input line (an empty line for a pair with an empty side, or, with
    ``--skip-bad-lines``, a line that is not UTF-8), a chunk of pairs at a time; with -o, a
    summary with the perplexity on stderr."""
    import math

    from heedful.decoding.forced import force_decode

    translator = load_translator(args.run_dir, device=args.device, text_for="score")
    tok = translator.tokenizer
    pairs, total, ntok = 0, 0.0, 0
    bar = _bar("score") if args.output is not None else None
    with closing_bar(bar), output(args.output) as out:
        for block in pair_lines(args.src, args.tgt, args.skip_bad_lines):
            full = [i for i, (s, t) in enumerate(block) if s and t]
            results = force_decode(translator.model, tok.encode_src([block[i][0] for i in full]),
                                   tok.encode_tgt([block[i][1] for i in full])) if full else []
            scored = dict(zip(full, results, strict=True))
            for i in range(len(block)):
                r = scored.get(i)
                if args.json:
                    out.write(json.dumps(
                        {"log_prob": None if r is None else round(r.log_prob, 4),
                         "per_token": None if r is None else round(r.per_token, 4),
                         "tokens": 0 if r is None else r.num_tokens}) + "\n")
                else:
                    out.write("\n" if r is None else f"{r.log_prob:.4f}\t{r.per_token:.4f}\n")
            pairs += len(results)
            total += sum(r.log_prob for r in results)
            ntok += sum(r.num_tokens for r in results)
            if bar is not None:
                bar.update(len(block))
    if pairs and args.output:
        print(f"{pairs} pairs, {ntok} target tokens: log-prob {total:.1f}, "
              f"{total / ntok:.4f} per token (perplexity {math.exp(-total / ntok):.2f})",
              file=sys.stderr)
    return 0


def _bar(what: str) -> Any:
    from tqdm import tqdm

    return tqdm(unit="pair", desc=what, leave=False)


def cmd_attention(args: argparse.Namespace) -> int:
    """Translate one sentence and plot its attention (a heatmap, every head as a grid, or an
    interactive HTML page)."""
    from heedful.analysis.plots import attention_html, plot_attention, plot_attention_grid

    translator = load_translator(args.run_dir, args.quantize, args.device, args.precision)
    result = translator.translate([args.sentence], return_attention=True,
                                  **decode_overrides(args))[0]
    if translator.config.data.source == "audio" and result.attention is not None:
        return _audio_attention(args, result, translator)
    if translator.config.data.source != "text" and result.attention is not None:
        return _image_attention(args, result)
    if result.attention is None:
        raise CheckpointError(f"{args.run_dir}: this model has no attention to plot "
                              "(attention: none)")
    attention = result.attention.float()  # (T_out, L, H, S)
    weights = _selected_weights(args, result)  # checks --layer and --head
    print(result.text)
    if args.grid:
        path = plot_attention_grid(attention.numpy(), result.src_pieces, result.tgt_pieces,
                                   args.output, title=result.text)
    else:
        path = plot_attention(weights, result.src_pieces, result.tgt_pieces,
                              args.output, title=result.text)
    print(f"attention heatmap written to {path}")
    if args.html:
        page = attention_html(attention.numpy(), result.src_pieces, result.tgt_pieces, args.html,
                              title=f"{args.sentence} → {result.text}")
        print(f"interactive page written to {page}")
    return 0


def _image_attention(args: argparse.Namespace, result: Any) -> int:
    """``attention`` of an image run: the image with each output character's attention drawn
    over it (one panel per character), and with --html a page where hovering a character
    lights its regions."""
    import numpy as np
    from PIL import Image

    from heedful.analysis.image_attention import image_attention_html, plot_image_attention

    weights = _selected_weights(args, result)
    with Image.open(args.sentence) as img:
        picture = np.asarray(img.convert("L"))
    print(result.text)
    path = plot_image_attention(picture, weights, result.boxes, result.tgt_pieces, args.output,
                                title=result.text)
    print(f"attention overlays written to {path}")
    if args.html:
        page = image_attention_html(picture, weights, result.boxes, result.tgt_pieces,
                                    args.html, title=f"{Path(args.sentence).name} → "
                                                     f"{result.text}")
        print(f"interactive page written to {page}")
    return 0


def _audio_attention(args: argparse.Namespace, result: Any, translator: Any) -> int:
    """``attention`` of an audio run: the spectrogram with each output character's attention
    on the same time axis, and with --html a page where hovering a character lights the
    frames it listened to."""
    from heedful.analysis.audio_attention import plot_audio_attention
    from heedful.analysis.image_attention import image_attention_html
    from heedful.audio.encoder import AudioEncoder
    from heedful.audio.features import spectrogram_picture

    weights = _selected_weights(args, result)
    features = translator.reader.read(args.sentence)
    print(result.text)
    path = plot_audio_attention(features, weights, result.spans, translator.reader.hop_seconds,
                                result.tgt_pieces, args.output, title=result.text)
    print(f"spectrogram with attention written to {path}")
    if args.html:
        boxes = AudioEncoder.slot_boxes_of(*features.shape)
        page = image_attention_html(
            spectrogram_picture(features), weights, boxes, result.tgt_pieces, args.html,
            title=f"{Path(args.sentence).name} → {result.text}",
            hint="Hover a character to light the frames of the spectrogram it listened to.",
            stretch=True)
        print(f"interactive page written to {page}")
    return 0


def _selected_weights(args: argparse.Namespace, result: Any) -> Any:
    """The (T_out, S) weights of --layer and --head (their mean without --head)."""
    attention = result.attention.float()  # (T_out, L, H, S)
    _, layers, heads, _ = attention.shape
    if not -layers <= args.layer < layers:
        raise ConfigError(f"--layer {args.layer}: the model has {layers} layer(s)")
    if args.head is not None and not -heads <= args.head < heads:
        raise ConfigError(f"--head {args.head}: the model has {heads} head(s)")
    attn = attention[:, args.layer]
    return (attn.mean(1) if args.head is None else attn[:, args.head]).numpy()


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to a dialogue model: one reply per stdin line; /reset starts a new conversation,
    /quit (or end of input) ends."""
    from heedful.decoding.chat import ChatSession

    if args.context_turns < 1:
        raise ConfigError(f"--context-turns must be at least 1 (got {args.context_turns})")
    translator = load_translator(args.run_dir, args.quantize, args.device, args.precision,
                                 text_for="chat")
    decode = decode_overrides(args)
    translator.decode_options(**decode)  # bad options fail before the first turn
    session = ChatSession(translator, args.context_turns, args.separator, decode)
    interactive = sys.stdin.isatty()
    if interactive:
        print("heedful chat: type a message; /reset starts a new conversation, /quit ends",
              file=sys.stderr)
    for text in _turns(sys.stdin, interactive):
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


def _turns(stream: TextIO, interactive: bool) -> Iterator[str]:
    """The user's non-empty lines, stripped, until end of input or /quit (/exit); with a
    ``you>`` prompt on stderr when interactive."""
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        try:
            line = stream.readline()
        except UnicodeDecodeError as err:
            raise DataError(f"<stdin>: a line is not valid UTF-8 ({err.reason} at byte "
                            f"{err.start}); the conversation stops here") from None
        if not line:
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        yield text
