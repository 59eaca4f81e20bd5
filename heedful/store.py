"""The prepared store: a training split's token ids on disk, memory-mapped for training.

``heedful prepare`` (:mod:`heedful.training.prepare`) writes it into the run directory::

    RUN_DIR/prepared/manifest.json       what it holds and what it was built from (JSON)
    RUN_DIR/prepared/src.tokens.bin      every kept pair's source ids, end to end (ends with EOS)
    RUN_DIR/prepared/tgt.tokens.bin      the target ids (bare: BOS/EOS are added per batch)
    RUN_DIR/prepared/{src,tgt}.offsets.bin   int64, N + 1: pair i is tokens[off[i]:off[i + 1]]
    RUN_DIR/prepared/{src,tgt}.lengths.bin   per-pair lengths (what the batch plan reads)
    RUN_DIR/prepared/order.bin           the pairs sorted by (target, source) length
    RUN_DIR/prepared/sizes.bin           along that order, each pair's padded size
                                         max(source, target + 1): all the batch plan reads
    RUN_DIR/prepared/align.{tokens,offsets,lengths}.bin   with ``data.train.alignments``:
                                         each pair's subword links, (source piece, target
                                         piece) int32 pairs end to end, as a third "side"
                                         (offsets and lengths count int32 values: 2 a link)

Each ``.bin`` file is a bare little-endian NumPy array (``numpy.memmap``); the manifest gives
each one's dtype, length, size and sha256 — the layout of fairseq's ``MMapIndexedDataset``
(a data file and an index), with the index in JSON. Every rank of a DDP run maps the same
files, so the pages are shared through the page cache, never copied per process.

Nothing half-written is ever used: the store is written into a temporary directory, each file
fsynced, the manifest last, then renamed into place (as checkpoints are). Opening checks the
manifest, each file's size (a truncated file) and, with ``verify``, its sha256 (a corrupt one);
a problem is a :class:`~heedful.errors.DataError` that names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from heedful.batching import TokenArray, length_order, padded_sizes
from heedful.errors import DataError

STORE_DIR = "prepared"
MANIFEST = "manifest.json"
FORMAT = "heedful-prepared-store"
FORMAT_VERSION = 1
_SIDES = ("src", "tgt")
_ALIGN = "align"
_REPAIR = "run `heedful prepare` with the same config and run directory to rebuild it"


def store_path(run_dir: Path) -> Path:
    return run_dir / STORE_DIR


def file_sha256(path: Path) -> str:
    """sha256 of a file, read a block at a time into one buffer (hashlib lets other threads
    run meanwhile)."""
    h = hashlib.sha256()
    buffer = bytearray(1 << 22)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def hash_files(paths: Sequence[Path]) -> list[str]:
    """sha256 of each file, several at a time."""
    if len(paths) <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1, 4)) as pool:
        return list(pool.map(file_sha256, paths))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writing


class _ArrayFile:
    """One ``.bin`` file being written: appends, counting and hashing as it goes."""

    def __init__(self, path: Path, dtype: np.dtype[Any]) -> None:
        self.path, self.dtype = path, dtype
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.sha256 = hashlib.sha256()
        self.length = 0

    def append(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype.newbyteorder("<")).tobytes()
        self.file.write(data)
        self.sha256.update(data)
        self.length += len(values)

    def close(self) -> dict[str, Any]:
        """Flush, fsync and close; the manifest's entry for this file."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"dtype": self.dtype.str.lstrip("<|="), "length": self.length,
                "bytes": self.length * self.dtype.itemsize, "sha256": self.sha256.hexdigest()}


class StoreWriter:
    """Writes a store into ``RUN_DIR/.prepared.tmp-PID``; :meth:`commit` renames it into
    place, :meth:`abort` (or any error) removes it. ``token_dtype``/``length_dtype`` hold
    every id / length the store will see."""

    def __init__(self, run_dir: Path, token_dtype: str, length_dtype: str,
                 alignments: bool = False) -> None:
        self.run_dir = run_dir
        self.tmp = run_dir / f".{STORE_DIR}.tmp-{os.getpid()}"
        self._current = self.tmp
        self.sides = (*_SIDES, _ALIGN) if alignments else _SIDES
        self._guard(self._start, np.dtype(token_dtype), np.dtype(length_dtype))
        self.pairs = 0
        self._ends = {side: 0 for side in self.sides}

    def _start(self, token_dtype: np.dtype[Any], length_dtype: np.dtype[Any]) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.files: dict[str, _ArrayFile] = {}
        for side in self.sides:
            if side == _ALIGN:
                token_dtype = length_dtype = np.dtype(np.int32)
            for kind, dtype in (("tokens", token_dtype), ("offsets", np.dtype(np.int64)),
                                ("lengths", length_dtype)):
                name = f"{side}.{kind}.bin"
                self.files[name] = _ArrayFile(self.tmp / name, dtype)
            self.files[f"{side}.offsets.bin"].append(np.zeros(1, dtype=np.int64))

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``; a failed write (a full disk, say) removes the temporary store and is a
        DataError naming the file."""
        try:
            return fn(*args)
        except OSError as err:
            self.abort()
            where = err.filename or self._current
            raise DataError(f"could not write the prepared store: {where}: "
                            f"{err.strerror or err}; nothing was kept (the store in "
                            f"{store_path(self.run_dir)}, if any, is unchanged)") from None

    def append(self, tokens: dict[str, np.ndarray], lengths: dict[str, np.ndarray],
               links: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Add pairs: per side, their ids end to end and their lengths; with alignments,
        ``links``: their subword links (K, 2) end to end and the count per pair."""
        if _ALIGN in self.sides:
            assert links is not None, "a store with alignments needs each pair's links"
            tokens = {**tokens, _ALIGN: links[0].reshape(-1)}
            lengths = {**lengths, _ALIGN: 2 * links[1]}
        self._guard(self._append, tokens, lengths)

    def _append(self, tokens: dict[str, np.ndarray], lengths: dict[str, np.ndarray]) -> None:
        for side in self.sides:
            lens = lengths[side].astype(np.int64)
            for kind, values in (("tokens", tokens[side]), ("lengths", lengths[side]),
                                 ("offsets", self._ends[side] + np.cumsum(lens))):
                self._current = self.files[f"{side}.{kind}.bin"].path
                self.files[f"{side}.{kind}.bin"].append(values)
            self._ends[side] += int(lens.sum())
        self.pairs += len(lengths["src"])

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the length order and the manifest (``manifest`` plus the arrays), fsync,
        and rename the store into place, replacing an older one. Returns its path."""
        return Path(self._guard(self._commit, manifest))

    def _commit(self, manifest: dict[str, Any]) -> Path:
        arrays = {}
        for name, f in self.files.items():
            self._current = f.path
            arrays[name] = f.close()
        self.files = {}
        lens = {side: np.fromfile(self.tmp / f"{side}.lengths.bin",
                                  dtype=np.dtype(arrays[f"{side}.lengths.bin"]["dtype"]))
                for side in _SIDES}
        order = length_order(lens["src"], lens["tgt"])
        sizes = padded_sizes(lens["src"], lens["tgt"], order)
        del lens
        for name, values, dtype in (
                ("order.bin", order, np.int32 if self.pairs < 2**31 else np.int64),
                ("sizes.bin", sizes, np.uint16 if sizes.max() < 2**16 else np.int32)):
            array_file = _ArrayFile(self.tmp / name, np.dtype(dtype))
            self._current = array_file.path
            array_file.append(values)
            arrays[name] = array_file.close()
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, "pairs": self.pairs,
                **manifest, "arrays": arrays}
        self._current = self.tmp / MANIFEST
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as out:
            out.write(json.dumps(full, indent=1) + "\n")
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(self.tmp)
        final = store_path(self.run_dir)
        old = self.run_dir / f".{STORE_DIR}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)  # from here until the next rename there is no store
        os.replace(self.tmp, final)
        _fsync_dir(self.run_dir)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def abort(self) -> None:
        for f in getattr(self, "files", {}).values():
            with contextlib.suppress(OSError):  # what a full disk refused stays refused
                f.file.close()
        self.files = {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_leftovers(run_dir: Path) -> None:
    """Drop what a cut-off prepare left behind (its temporary store, or the store it was
    replacing); a process still running keeps its own."""
    for pattern in (f".{STORE_DIR}.tmp-*", f".{STORE_DIR}.old-*"):
        for path in run_dir.glob(pattern):
            pid = path.name.rpartition("-")[2]
            if not (pid.isdigit() and _running(int(pid))):
                shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing one now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- reading


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The store's manifest; None if the run directory has no store. A manifest that cannot
    be read, or of another format, is a DataError naming it."""
    path = store_path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is corrupt ({err}); {_REPAIR}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not the manifest of a heedful prepared store; {_REPAIR}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: store format {manifest.get('format_version')!r} is not "
                        f"supported (this heedful reads format {FORMAT_VERSION}); {_REPAIR}")
    return manifest


@dataclass(frozen=True)
class TokenStore:
    """An opened store: the two sides' token arrays (memory-mapped), the length order, the
    padded sizes along it (see :class:`~heedful.batching.BatchPlan`) and the manifest."""

    path: Path
    src: TokenArray
    tgt: TokenArray
    order: np.ndarray
    sizes: np.ndarray
    manifest: dict[str, Any]
    maps: tuple[mmap.mmap, ...] = ()
    """The mappings of the arrays, for :meth:`release_pages`."""
    links: TokenArray | None = None
    """With alignments: pair i's subword links are ``links[i].reshape(-1, 2)`` (source
    piece, target piece)."""

    def __len__(self) -> int:
        return len(self.src)

    def release_pages(self) -> None:
        """Unmap the pages of the store this process has touched (they stay in the page
        cache: the next read maps them again, without I/O). Batches read pairs at
        random, and the kernel maps up to 16 cached pages around each one read: without
        this, a training process's RSS would count most of the store as file-backed pages
        after a few hundred batches — shared and reclaimable, but reported all the same."""
        for m in self.maps:
            m.madvise(mmap.MADV_DONTNEED)


def open_store(run_dir: Path, verify: bool = True) -> TokenStore:
    """Map the store of ``run_dir``. Checks each file's presence and size, and with
    ``verify`` its sha256. Raises DataError naming the file at fault."""
    manifest = read_manifest(run_dir)
    root = store_path(run_dir)
    if manifest is None:
        raise DataError(f"{root / MANIFEST} is missing: {run_dir} holds no prepared store; "
                        f"{_REPAIR}")
    arrays: dict[str, dict[str, Any]] = manifest["arrays"]
    for name, entry in arrays.items():
        path = root / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{path} is missing; {_REPAIR}") from None
        if size != entry["bytes"]:
            raise DataError(f"{path} is truncated or altered: {size} bytes, the manifest "
                            f"says {entry['bytes']}; {_REPAIR}")
    if verify:
        names = list(arrays)
        for name, digest in zip(names, hash_files([root / n for n in names]), strict=True):
            if digest != arrays[name]["sha256"]:
                raise DataError(f"{root / name} is corrupt: its checksum does not match "
                                f"{root / MANIFEST}; {_REPAIR}")
    # batches read pairs (and slices of the order) at random: no read-ahead (a store larger
    # than memory would otherwise read far more than the batches need); the plan reads the
    # sizes in order
    mapped = {name: _map(root / name, entry, random=name != "sizes.bin")
              for name, entry in arrays.items()}
    sides = [TokenArray(*(mapped[f"{s}.{kind}.bin"][0] for kind in ("tokens", "offsets",
                                                                     "lengths")))
             for s in _SIDES]
    links = (TokenArray(*(mapped[f"{_ALIGN}.{kind}.bin"][0]
                          for kind in ("tokens", "offsets", "lengths")))
             if f"{_ALIGN}.tokens.bin" in mapped else None)
    maps = tuple(m for _, m in mapped.values() if m is not None)
    return TokenStore(root, sides[0], sides[1], mapped["order.bin"][0], mapped["sizes.bin"][0],
                      manifest, maps, links)


def _map(path: Path, entry: dict[str, Any], random: bool) -> tuple[np.ndarray,
                                                                     mmap.mmap | None]:
    """A read-only, shared mapping of an array file, and the array over it."""
    dtype = np.dtype(entry["dtype"]).newbyteorder("<")
    if entry["length"] == 0:
        return np.zeros(0, dtype=dtype), None
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if random:
        mapping.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mapping, dtype=dtype, count=entry["length"]), mapping
