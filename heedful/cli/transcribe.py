"""``heedful transcribe``: read images with a run that was trained on them."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from heedful.cli.options import add_decode_options, add_device_options, decode_overrides
from heedful.cli.streams import iter_input, output
from heedful.errors import BadLineWarning, ConfigError, DataError

if TYPE_CHECKING:
    from heedful.cli.options import Subparsers

CHUNK = 64
"""Inputs read and decoded together (sorted by width into batches)."""


def register(subparsers: Subparsers) -> None:
    """Add ``transcribe``."""
    p = subparsers.add_parser("transcribe", help="image files -> text, one line per file "
                                                 "(paths as arguments, or one per stdin line)")
    p.add_argument("run_dir", help="a run directory (data.source: image) or a shipped model")
    p.add_argument("files", nargs="*", help="image files (none: read paths from --input or "
                                            "stdin, one per line)")
    p.add_argument("--input", "-i", help="a file listing image paths, one per line")
    p.add_argument("--output", "-o")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: file, text, score, n_best")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="a file that cannot be read gives an empty output line and a warning "
                        "(default: an error naming it, after the lines before it)")
    add_device_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args: argparse.Namespace) -> int:
    """One output line per input, in order: an empty input line gives an empty output line,
    a file that cannot be read stops the run with an error naming it (exit status 2) after
    the lines before it were written — or, with ``--skip-bad-lines``, an empty line."""
    from heedful.cli.translate import load_translator
    from heedful.decoding.transcriber import Transcriber

    if args.files and args.input:
        raise ConfigError("give image files as arguments or --input, not both")
    transcriber = load_translator(args.run_dir, args.quantize, args.device, args.precision)
    if not isinstance(transcriber, Transcriber):
        raise ConfigError(f"{args.run_dir} translates text (data.source: text); transcribe "
                          "reads images with a run trained on them (heedful translate reads "
                          "text)")
    overrides = decode_overrides(args)
    paths: Iterator[str] = (iter(args.files) if args.files
                            else iter_input(args.input, args.skip_bad_lines))
    where = ("argument" if args.files
             else f"{args.input}, line" if args.input not in (None, "-") else "stdin, line")
    with output(args.output) as out:
        number = 0
        for chunk, stop in _chunks(paths):
            good, error = _readable(transcriber, chunk, number, where, args.skip_bad_lines)
            results = transcriber.translate(good, **overrides) if good else []
            for path, result in zip(good, results, strict=True):
                out.write(_line(path, result, args.json))
            if error is not None:
                raise error
            if stop is not None:
                raise stop
            number += len(chunk)
    return 0


def _chunks(paths: Iterator[str]) -> Iterator[tuple[list[str], DataError | None]]:
    """Chunks of ``CHUNK`` paths; a line the input cannot give (not UTF-8) ends the last chunk
    with its error, so the paths before it are still transcribed."""
    while True:
        chunk: list[str] = []
        try:
            chunk.extend(islice(paths, CHUNK))
        except DataError as err:
            yield chunk, err
            return
        if not chunk:
            return
        yield chunk, None


def _readable(transcriber: Any, chunk: list[str], before: int, where: str, skip_bad: bool
              ) -> tuple[list[str], DataError | None]:
    """The chunk's paths up to the first that cannot be read (and that one's error), or with
    ``skip_bad`` every path, an unreadable one replaced by "" (an empty result) and warned
    about. ``before``: inputs before this chunk; ``where``: how to name an input ("FILE,
    line"), before its number."""
    good: list[str] = []
    for offset, path in enumerate(chunk):
        if path.strip():
            try:
                transcriber.reader.read(path.strip(), f"{where} {before + offset + 1}")
            except DataError as err:
                if not skip_bad:
                    return good, err
                warnings.warn(f"{err}; writing an empty line", BadLineWarning, stacklevel=2)
                path = ""
        good.append(path)
    return good, None


def _line(path: str, result: Any, as_json: bool) -> str:
    if not as_json:
        return result.text + "\n"
    return json.dumps({"file": path.strip(), "text": result.text,
                       "score": round(result.score, 4),
                       "n_best": [{"text": t, "score": round(s, 4)} for t, s in result.n_best]},
                      ensure_ascii=False) + "\n"
