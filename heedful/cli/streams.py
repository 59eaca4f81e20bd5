"""Where commands read their input lines and write their output: a file or stdin/stdout.

An output file is written under a temporary name and renamed into place when the command
succeeds. Bad input (a line that is not UTF-8 at line 500,000 of a stream) stops the command
at that line with an error naming it, after the output of every line before it was written:
the file then holds exactly those lines, and the error says so. A crash or any other error
leaves no half-written file behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from heedful.errors import DataError


def read_input(path: str | None) -> list[str]:
    """The lines of ``path``, or of stdin when it is ``None`` (UTF-8 checked, line by line)."""
    return list(iter_input(path))


def iter_input(path: str | None, skip_bad: bool = False) -> Iterator[str]:
    """The lines of ``path`` or stdin, read a block at a time (constant memory); with
    ``skip_bad`` a line that is not UTF-8 becomes an empty line and a warning."""
    from heedful.lines import iter_lines

    if path is None:
        return iter_lines(sys.stdin.buffer, "<stdin>", skip_bad=skip_bad)
    return iter_lines(path, skip_bad=skip_bad)


def iter_constraints(path: str) -> Iterator[list[str]]:
    """``--constraints FILE``: one JSON list of target phrases per input line (``[]`` for
    none), read a block at a time; anything else is a :class:`~heedful.errors.DataError`
    naming the file and line."""
    import json

    from heedful.errors import DataError
    from heedful.lines import iter_lines

    for number, line in enumerate(iter_lines(path), 1):
        try:
            phrases = json.loads(line) if line.strip() else []
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not JSON ({err.msg}); give one JSON list of "
                            'phrases per input line, e.g. ["firmament", "green herb"]') from None
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            raise DataError(f"{path}:{number}: expected a JSON list of strings, got {line!r}")
        yield phrases


PAIR_LINES = 2048
"""Pairs that ``score`` and ``align`` process together."""


def pair_lines(src: str, tgt: str, skip_bad: bool = False, size: int | None = None
               ) -> Iterator[list[tuple[str, str]]]:
    """The (source, target) line pairs of two line-aligned files, ``size`` (default
    :data:`PAIR_LINES`) at a time,
    normalised as the corpus readers normalise (blank lines stay, as empty strings), in
    constant memory. A line that is not UTF-8 ends the pairs before it — they come first —
    then a :class:`~heedful.errors.DataError` naming it; with ``skip_bad`` it becomes ""
    and a warning. Files of different lengths are an error once the shorter one ends."""
    from itertools import zip_longest

    from heedful.data import clean_segment
    from heedful.lines import iter_lines

    size = size or PAIR_LINES
    block: list[tuple[str, str]] = []
    number = 0
    try:
        for s, t in zip_longest(iter_lines(src, skip_bad=skip_bad),
                                iter_lines(tgt, skip_bad=skip_bad)):
            number += 1
            if s is None or t is None:
                longer, shorter = (src, tgt) if t is None else (tgt, src)
                raise DataError(f"source and target differ in length: {shorter} has "
                                f"{number - 1} lines, {longer} has more (line {number})")
            block.append((clean_segment(s), clean_segment(t)))
            if len(block) == size:
                yield block
                block = []
    except DataError:
        if block:  # the pairs before the bad line are answered first
            yield block
        raise
    if block:
        yield block


@contextmanager
def output(path: str | None) -> Iterator[TextIO]:
    """``path`` opened for writing (UTF-8), or stdout when it is ``None`` (left open). A
    regular file is written under a temporary name and renamed into place at the end;
    anything else (``/dev/null``, a pipe) is written directly."""
    if path is None:
        yield sys.stdout
        return
    final = Path(path)
    if final.exists() and not final.is_file():
        with open(final, "w", encoding="utf-8") as out:
            yield out
        return
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        out = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as err:  # name the file the user gave, not the temporary one
        raise OSError(err.errno, err.strerror, str(final)) from None
    try:
        with out:
            yield out
        os.replace(tmp, final)
    except DataError as err:  # bad input: keep the output of the lines before it
        os.replace(tmp, final)
        raise DataError(f"{err} (the output of the lines before it is in {final})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def closing_bar(bar: Any) -> Iterator[None]:
    """Close a progress bar (clearing its line) however the block ends, so an error message
    starts its own line."""
    try:
        yield
    finally:
        if bar is not None:
            bar.close()
