"""Corpus readers and batching: normalisation, and errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from heedful.config import load_config
from heedful.data import (
    BatchStream,
    DataError,
    load_split,
    plan_batches,
    read_jsonl,
    read_lines,
    read_parallel,
    read_tsv,
)


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
