"""Where commands read their input lines and write their output: a file or stdin/stdout."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def read_input(path: str | None) -> list[str]:
    """The lines of ``path``, or of stdin when it is ``None`` (UTF-8 checked, line by line)."""
    from heedful.data import decode_lines, read_lines

    if path is None:
        return decode_lines(sys.stdin.buffer.read(), "<stdin>")
    return read_lines(path)


@contextmanager
def output(path: str | None) -> Iterator[TextIO]:
    """``path`` opened for writing (UTF-8), or stdout when it is ``None`` (left open)."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as out:
        yield out
