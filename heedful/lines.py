"""Text files line by line, one block in memory at a time: gzip detected by its magic bytes,
a UTF-8 BOM at the start dropped, ``\\n``, ``\\r\\n`` and a lone ``\\r`` all ending a line, and
invalid UTF-8 an error naming the file and line (docs/data.md, "Normalisation").

:class:`LineReader` hands out blocks of whole lines as bytes (what ``heedful prepare`` ships to
its workers); :func:`decode_text` / :func:`decode_block` decode one; :func:`iter_lines` and
:func:`read_lines` give the lines of a file or stream as text.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from heedful.errors import BadLineWarning, DataError

BLOCK_BYTES = 1 << 22
"""How much a :class:`LineReader` reads at a time."""
_BOM = b"\xef\xbb\xbf"


class LineReader:
    """The lines of a UTF-8 text file (gzip detected by its magic bytes) or of a binary
    stream, handed out in blocks of whole lines, still as bytes: a BOM at the very start is
    dropped, every line ending (``\\n``, ``\\r\\n``, a lone ``\\r``) becomes ``\\n``, and a last
    line without one gets one. :func:`decode_block` decodes a block, naming the line of an
    invalid byte. ``lines_given`` counts the lines handed out so far."""

    def __init__(self, source: str | Path | IO[bytes], name: str | None = None,
                 block_bytes: int = BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self._gzip = False
        self._compressed: IO[bytes] | None = None
        self._owned = isinstance(source, str | Path)  # a stream given is left open
        if isinstance(source, str | Path):
            self.name = str(source)
            self._file = self._open(Path(source))
        else:
            self.name, self._file = name or "<stream>", source
        self._buf = b""
        self._cr = b""  # a \r that ended the last block: half of a \r\n, perhaps
        self._started = self._eof = False
        self.lines_given = 0

    def _open(self, path: Path) -> IO[bytes]:
        try:
            f: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise DataError(f"file not found: {path}") from None
        except IsADirectoryError:
            raise DataError(f"{path} is a directory, not a file") from None
        if f.read(2) == b"\x1f\x8b":
            self._gzip = True
            f.seek(0)
            self._compressed = f
            return cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb"))
        f.seek(0)
        return f

    def close(self) -> None:
        if self._owned:
            self._file.close()
            if self._compressed is not None:  # GzipFile leaves the file it reads open
                self._compressed.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> bytes:
        try:
            return self._file.read(self.block_bytes)
        except (OSError, EOFError, zlib.error) as err:
            if self._gzip:
                raise DataError(f"{self.name}: corrupt or truncated gzip file ({err})") from None
            raise DataError(f"{self.name}: cannot be read ({err})") from None

    def _fill(self) -> None:
        """Read one more block into the buffer (normalised)."""
        raw = self._read()
        if not self._started:
            self._started = True
            while 0 < len(raw) < len(_BOM) and (more := self._read()):
                raw += more
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
                if not raw:  # the BOM was all this block held, not the end of the input
                    return
        data = self._cr + raw
        self._cr = b""
        if not raw:
            self._eof = True
        elif data.endswith(b"\r"):
            self._cr, data = b"\r", data[:-1]
        self._buf += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._eof and self._buf and not self._buf.endswith(b"\n"):
            self._buf += b"\n"

    def _give(self, cut: int) -> bytes:
        block, self._buf = self._buf[:cut], self._buf[cut:]
        self.lines_given += block.count(b"\n")
        return block

    def take(self, min_bytes: int) -> bytes:
        """The next whole lines: as few as make ``min_bytes`` (at least one line), fewer
        only where the input ends first; ``b""`` at the end."""
        want = max(min_bytes, 1) - 1
        while (end := self._buf.find(b"\n", want)) < 0 and not self._eof:
            self._fill()
        if end < 0:  # the input ended first: the rest is whole lines (or nothing)
            end = self._buf.rfind(b"\n")
        return self._give(end + 1)

    def take_lines(self, count: int) -> bytes:
        """The next ``count`` lines (fewer where the input ends first)."""
        have = self._buf.count(b"\n")
        while have < count and not self._eof:
            before = len(self._buf)
            self._fill()
            have += self._buf.count(b"\n", before)
        if have < count:  # the input ended: what is left is whole lines
            return self._give(len(self._buf))
        rest = self._buf.split(b"\n", count)[count]
        return self._give(len(self._buf) - len(rest))

    def count_rest(self) -> int:
        """Read the input to its end; the number of lines given, all told."""
        while self.take(self.block_bytes):
            pass
        return self.lines_given


def decode_text(block: bytes, name: str, first_line: int) -> str:
    """A block of whole lines (as :class:`LineReader` gives them) -> text; an invalid byte is
    a :class:`DataError` naming ``name`` and the line (``first_line`` is the block's first)."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = first_line + block.count(b"\n", 0, err.start)
        raise _invalid_utf8(name, line_no, block[err.start]) from None


def _invalid_utf8(name: str, line_no: int, byte: int) -> DataError:
    return DataError(f"{name}, line {line_no}: invalid UTF-8 (byte 0x{byte:02x}); heedful "
                     "reads UTF-8 text only")


def decode_block(block: bytes, name: str, first_line: int) -> list[str]:
    """A block of whole lines -> its lines (see :func:`decode_text`)."""
    return decode_text(block, name, first_line).split("\n")[:-1]  # the block ends with \n


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (gzip allowed), without line endings.

    Raises:
        DataError: the file is missing, not valid UTF-8 (with the line number), or
            a corrupt gzip file.
    """
    return list(iter_lines(path))


def iter_lines(source: str | Path | IO[bytes], name: str | None = None,
               block_bytes: int = BLOCK_BYTES, skip_bad: bool = False) -> Iterator[str]:
    """The lines of a file or binary stream, one block in memory at a time. A line that is
    not UTF-8 comes after every line before it: then a :class:`DataError` naming it, or, with
    ``skip_bad``, an empty line in its place and a :class:`BadLineWarning`."""
    with LineReader(source, name, block_bytes) as reader:
        while block := reader.take(block_bytes):
            first = reader.lines_given - block.count(b"\n") + 1
            try:
                lines = decode_block(block, reader.name, first)
            except DataError:  # line by line: the good ones before the bad one still count
                yield from _decode_each(block, reader.name, first, skip_bad)
                continue
            yield from lines


def _decode_each(block: bytes, name: str, first_line: int, skip_bad: bool) -> Iterator[str]:
    import warnings

    for line_no, raw in enumerate(block.split(b"\n")[:-1], first_line):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            error = _invalid_utf8(name, line_no, raw[err.start])
            if not skip_bad:
                raise error from None
            warnings.warn(f"{error}: an empty line stands in for it", BadLineWarning,
                          stacklevel=2)
            yield ""


def decode_lines(raw: bytes, name: str) -> list[str]:
    """UTF-8 bytes -> lines (BOM dropped, any line ending); errors name ``name`` and line."""
    import io

    return list(iter_lines(io.BytesIO(raw), name))
