"""Corpus readers and batching: normalisation, and errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.batching import BatchPlan, BatchStream, TokenArray, assemble, plan_batches
from heedful.config import load_config
from heedful.data import (
    DataError,
    collect,
    load_split,
    make_batch,
    read_jsonl,
    read_lines,
    read_parallel,
    read_tsv,
    text_chunks,
)
from heedful.lines import LineReader, iter_lines


def test_bundled_dataset_loads() -> None:
    cfg = load_config()
    train, dev, test = (load_split(cfg.data, s) for s in ("train", "dev", "test"))
    assert train is not None and dev is not None and test is not None
    assert (len(train), len(dev), len(test)) == (28067, 998, 1996)
    assert test.src[0].startswith("Y llamó Dios")


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.es").write_text("uno\ndos\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(DataError, match=r"a\.es has 2 lines, .*a\.en has 1 lines"):
        read_parallel(tmp_path / "a.es", tmp_path / "a.en")


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.es").write_bytes(b"uno\ndos\ntr\xe9s\n")
    with pytest.raises(DataError, match=r"bad\.es, line 3: invalid UTF-8"):
        read_lines(tmp_path / "bad.es")


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(gzip.compress("hola\nadiós\n".encode()))
    assert read_lines(tmp_path / "x.gz") == ["hola", "adiós"]


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("hola\n" * 1000).encode())
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x\.gz: corrupt or truncated gzip"):
        read_lines(tmp_path / "x.gz")


def test_bom_crlf_and_lone_cr_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes("\ufeffuno\r\ndos\rtres\n".encode())
    assert read_lines(tmp_path / "x.txt") == ["uno", "dos", "tres"]


def test_tsv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "x.tsv").write_text("hola\thello\nadiós\tgoodbye\n")
    corpus = read_tsv(tmp_path / "x.tsv", "0", "1")
    assert corpus.src == ["hola", "adiós"] and corpus.tgt == ["hello", "goodbye"]
    (tmp_path / "x.jsonl").write_text(
        json.dumps({"es": "hola", "en": "hello"}) + "\n" + json.dumps({"es": "sí", "en": "yes"}))
    corpus = read_jsonl(tmp_path / "x.jsonl", "es", "en")
    assert corpus.tgt == ["hello", "yes"]


def test_jsonl_blank_lines_are_counted(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"src": "a", "tgt": "b"}\n\n   \n{"src": "c", "tgt": "d"}\n')
    corpus = read_jsonl(tmp_path / "x.jsonl")
    assert len(corpus) == 2 and corpus.skipped == 2


def test_jsonl_missing_field_names_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"es": "hola", "en": "hello"}\n{"es": "sí"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl, line 2: missing field 'en'"):
        read_jsonl(tmp_path / "x.jsonl", "es", "en")


def test_tsv_too_few_columns_names_line(tmp_path: Path) -> None:
    (tmp_path / "x.tsv").write_text("a\tb\nonly-one\n")
    with pytest.raises(DataError, match=r"x\.tsv, line 2: expected at least 2"):
        read_tsv(tmp_path / "x.tsv")


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "e.es").write_text("")
    (tmp_path / "e.en").write_text("")
    cfg = load_config(None, ["data.dataset=null", f"data.train.src={tmp_path / 'e.es'}",
                             f"data.train.tgt={tmp_path / 'e.en'}"])
    with pytest.raises(DataError, match=r"empty corpus: the train split .*e\.es"):
        load_split(cfg.data, "train")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found: .*nope\.es"):
        read_lines(tmp_path / "nope.es")


def test_batches_respect_budget_and_cover_everything() -> None:
    src_lens = [3, 10, 7, 50, 2, 9, 9, 30]
    tgt_lens = [4, 12, 6, 45, 1, 9, 11, 35]
    plan = plan_batches(src_lens, tgt_lens, batch_tokens=40)
    assert sorted(i for b in plan for i in b) == list(range(8))
    for b in plan:
        cost = len(b) * max(max(src_lens[i], tgt_lens[i] + 1) for i in b)
        assert cost <= 40 or len(b) == 1


def test_stream_position_resumes_exactly() -> None:
    src = [[5] * (i % 13 + 1) + [3] for i in range(300)]
    tgt = [[6] * (i % 7 + 1) for i in range(300)]
    a = BatchStream(src, tgt, 60, 7, 0, 2, 3)
    first = [next(a).src.tolist() for _ in range(90)]
    b = BatchStream(src, tgt, 60, 7, 0, 2, 3)
    for _ in range(37):
        next(b)
    pos = b.position()
    c = BatchStream(src, tgt, 60, 7, 0, 2, 3)
    c.seek(pos["epoch"], pos["index"])
    assert [next(c).src.tolist() for _ in range(53)] == first[37:]


# --------------------------------------------------------------------------- streaming


def _whole_file_lines(raw: bytes) -> list[str]:
    """The reader before streaming (0.2.0), as the reference: decode, normalise, split."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


PIECES = [b"abc", "ñandú".encode(), b"\r\n", b"\r", b"\n", b"\xef\xbb\xbf", b"\t", b" ",
          "日本".encode(), b"\x00"]


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECES), max_size=30), block=st.integers(1, 9),
       gz=st.booleans())
def test_streaming_reader_matches_the_whole_file_reader(tmp_path_factory, parts: list[bytes],
                                                        block: int, gz: bool) -> None:
    # blocks of 1-9 bytes cut \r\n pairs, BOMs and multi-byte characters at every place
    raw = b"".join(parts)
    path = tmp_path_factory.mktemp("s") / "x.txt"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    assert list(iter_lines(path, block_bytes=block)) == _whole_file_lines(raw)


def test_invalid_utf8_is_found_in_any_block(tmp_path: Path) -> None:
    (tmp_path / "bad.es").write_bytes(b"uno\r\ndos\n" * 50 + b"tr\xe9s\n")
    with pytest.raises(DataError, match=r"bad\.es, line 101: invalid UTF-8"):
        list(iter_lines(tmp_path / "bad.es", block_bytes=7))


def test_take_lines_keeps_two_files_in_step(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"".join(b"%d\r\n" % i for i in range(100)))
    with LineReader(tmp_path / "a", block_bytes=5) as reader:
        assert reader.take_lines(3) == b"0\n1\n2\n"
        assert reader.take(10).startswith(b"3\n4\n5\n")
        assert reader.count_rest() == 100


def test_text_chunks_are_line_aligned_and_add_up_to_the_corpus(sample_files) -> None:
    whole = read_parallel(*sample_files)
    chunks = list(text_chunks(*sample_files, chunk_bytes=500))
    assert len(chunks) > 20
    assert all(c.src.count(b"\n") == c.tgt.count(b"\n") for c in chunks)
    assert [c.first_line for c in chunks[:2]] == [1, 1 + chunks[0].src.count(b"\n")]
    again = collect(iter(chunks), whole.origin)
    assert (again.src, again.tgt) == (whole.src, whole.tgt)
    limited = collect(text_chunks(*sample_files, chunk_bytes=500, limit=37), "")
    assert limited.src == whole.src[:37]


def test_line_count_mismatch_is_found_after_a_limit(tmp_path: Path) -> None:
    (tmp_path / "a.es").write_text("uno\ndos\ntres\n")
    (tmp_path / "a.en").write_text("one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.es has 3 lines, .*a\.en has 2 lines"):
        list(text_chunks(tmp_path / "a.es", tmp_path / "a.en", limit=1))


# --------------------------------------------------------------------------- batch plans


def _greedy_plan(src_lens: list[int], tgt_lens: list[int], budget: int) -> list[list[int]]:
    """The batch plan before NumPy (0.2.0), as the reference."""
    order = sorted(range(len(src_lens)), key=lambda i: (tgt_lens[i], src_lens[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(src_lens[i], tgt_lens[i] + 1)
        new_longest = max(longest, size)
        if current and new_longest * (len(current) + 1) > budget:
            batches.append(current)
            current, new_longest = [], size
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


@settings(max_examples=200, deadline=None)
@given(lens=st.lists(st.tuples(st.integers(1, 60), st.integers(0, 60)), min_size=1,
                     max_size=300),
       budget=st.integers(1, 400))
def test_numpy_plan_equals_the_greedy_plan(lens: list[tuple[int, int]], budget: int) -> None:
    src, tgt = [a for a, _ in lens], [b for _, b in lens]
    assert plan_batches(src, tgt, budget) == _greedy_plan(src, tgt, budget)


def test_assembled_batches_equal_make_batch() -> None:
    rng = np.random.default_rng(0)
    src = [[*rng.integers(4, 50, rng.integers(1, 12)).tolist(), 3] for _ in range(40)]
    tgt = [rng.integers(4, 50, rng.integers(1, 12)).tolist() for _ in range(40)]
    members = np.array([5, 0, 39, 17])
    a = assemble(TokenArray.from_lists(src), TokenArray.from_lists(tgt), members, 0, 2, 3)
    b = make_batch([src[i] for i in members], [tgt[i] for i in members], 0, 2, 3)
    for name in ("src", "src_mask", "tgt_in", "tgt_out", "tgt_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.num_tgt_tokens == b.num_tgt_tokens


def test_prefetching_changes_neither_batches_nor_positions() -> None:
    src = [[5] * (i % 13 + 1) + [3] for i in range(300)]
    tgt = [[6] * (i % 7 + 1) for i in range(300)]
    plain = BatchStream(src, tgt, 60, 7, 0, 2, 3)
    ahead = BatchStream(src, tgt, 60, 7, 0, 2, 3, prefetch=3)
    for n in range(2 * len(plain.plan) + 5):  # across epoch ends
        if n == 50:  # a seek restarts the thread from the new position
            plain.seek(1, 4)
            ahead.seek(1, 4)
        assert torch.equal(next(plain).src, next(ahead).src)
        assert plain.position() == ahead.position()
    ahead.close()
    assert len(BatchPlan.build(np.array([3, 4]), np.array([1, 1]), 1)) == 2


def test_prefetching_across_epochs_shorter_than_its_queue() -> None:
    src, tgt = [[5, 3], [5, 5, 3], [5, 5, 5, 3]], [[6], [6, 6], [6, 6, 6]]
    plain = BatchStream(src, tgt, 8, 3, 0, 2, 3)
    ahead = BatchStream(src, tgt, 8, 3, 0, 2, 3, prefetch=4)
    assert len(plain.plan) == 2
    for _ in range(11):  # the thread waits for each epoch's order from this thread
        assert torch.equal(next(plain).src, next(ahead).src)
        assert plain.position() == ahead.position()
    ahead.close()


def _threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_prefetching_thread_starts_no_openmp_team() -> None:
    """An epoch order of more than 32k batches is a randperm that runs an OpenMP loop; run on
    the prefetching thread, it started a second OpenMP team, which made libgomp throttle the
    training thread's own team (0.63x training speed at 10M pairs)."""
    torch.ones(1 << 16).add_(1)  # the main thread's team, started before counting
    before = _threads()
    stream = BatchStream([[3]] * 40_000, [[6]] * 40_000, 2, 1, 0, 2, 3, prefetch=2)
    assert len(stream.plan) == 40_000
    for _ in range(3):
        next(stream)
    running = _threads()  # (a team's workers end with the thread that started it)
    stream.close()
    assert running == before + 1  # the prefetching thread, and no OpenMP worker of its own
