"""The prepared store: the batches it gives equal those of the in-memory path it replaced,
staleness is detected, and every way a store can be damaged is an error naming the file."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import _greedy_plan  # the batch plan before NumPy, as the reference

from heedful.batching import BatchStream, epoch_order
from heedful.cli import main
from heedful.config import Config, load_config
from heedful.data import DataError, load_split, make_batch
from heedful.store import open_store, store_path
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from heedful.training.prepare import ensure_store, prepare_data


def _config(src: Path, tgt: Path, *extra: str) -> Config:
    return load_config(None, ["data.dataset=null", f"data.train.src={src}",
                              f"data.train.tgt={tgt}", "tokenizer.vocab_size=400",
                              "train.batch_tokens=300", "train.seed=5", *extra])


def _fits(src: list[int], tgt: list[int], max_len: int, ratio: float) -> bool:
    """The length filter before the store (0.2.0), as the reference."""
    if len(src) <= 1 or not tgt or len(src) > max_len or len(tgt) > max_len:
        return False
    return max(len(src) / len(tgt), len(tgt) / len(src)) <= ratio


def _todays_batches(cfg: Config, tok_dir: Path, epochs: int) -> list:
    """The batches of 0.2.0's in-memory path: read the split whole, train SentencePiece on
    it, encode, filter, plan, shuffle per epoch."""
    train = load_split(cfg.data, "train")
    assert train is not None
    tok = Tokenizer.train(train.src, train.tgt, cfg.tokenizer, tok_dir, cfg.train.seed)
    src, tgt = tok.encode_src(train.src), tok.encode_tgt(train.tgt)
    keep = [i for i in range(len(src)) if _fits(src[i], tgt[i], 40, 2.0)]
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    plan = _greedy_plan([len(s) for s in src], [len(t) for t in tgt], cfg.train.batch_tokens)
    return [make_batch([src[i] for i in plan[b]], [tgt[i] for i in plan[b]], PAD_ID, BOS_ID,
                       EOS_ID)
            for epoch in range(epochs) for b in epoch_order(len(plan), cfg.train.seed, epoch)]


@pytest.mark.parametrize("tokenizer", [
    ["tokenizer.input_sentence_size=150"],  # joint, sampled: 150 of ~400 lines
    ["tokenizer.joint=false", "tokenizer.input_sentence_size=120"],
    [],  # joint, every line
])
def test_store_batches_equal_the_in_memory_batches(tmp_path: Path, sample_files,
                                                   tokenizer: list[str]) -> None:
    cfg = _config(*sample_files, "data.max_src_len=40", "data.max_tgt_len=40",
                  "data.max_len_ratio=2.0", *tokenizer)
    data = prepare_data(cfg, tmp_path / "run")
    expected = _todays_batches(cfg, tmp_path / "today", epochs=2)
    # the tokenizer trained from the streamed sample is the one trained from the whole corpus
    for f in Tokenizer.files(tmp_path / "today"):
        assert (tmp_path / "run" / f.name).read_bytes() == f.read_bytes(), f.name
    store = data.store
    stream = BatchStream(store.src, store.tgt, cfg.train.batch_tokens, cfg.train.seed, PAD_ID,
                         BOS_ID, EOS_ID, order=store.order, sizes=store.sizes, prefetch=2,
                         after_batch=store.release_pages)  # as the trainer reads it
    assert data.filtered == 200 - len(store) > 0  # the filters dropped some
    for n, want in enumerate(expected):
        got = next(stream)
        for name in ("src", "src_mask", "tgt_in", "tgt_out", "tgt_mask"):
            assert torch.equal(getattr(got, name), getattr(want, name)), (n, name)
    stream.close()


def test_two_workers_write_the_same_store(tmp_path: Path, sample_files) -> None:
    from heedful.data import CHUNK_BYTES

    assert CHUNK_BYTES > 10_000  # the sample is one chunk: cut it smaller to spread it
    import heedful.data

    cfg = _config(*sample_files)
    one = ensure_store(cfg, tmp_path / "one", workers=1)
    heedful.data.CHUNK_BYTES = 2_000
    try:
        assert len(list(heedful.data.split_chunks(cfg.data, "train"))) > 10
        two = ensure_store(cfg, tmp_path / "two", workers=2)
    finally:
        heedful.data.CHUNK_BYTES = CHUNK_BYTES
    assert one == two == "the run directory has no prepared store yet"
    assert json.loads((tmp_path / "two" / "prepared" / "manifest.json").read_text())[
        "workers"] == 2
    arrays = [open_store(tmp_path / d).manifest["arrays"] for d in ("one", "two")]
    assert arrays[0] == arrays[1]  # byte for byte (the sha256 of every file)


def test_stale_store_is_detected(tmp_path: Path, sample_files) -> None:
    src, tgt = tmp_path / "a.es", tmp_path / "a.en"
    shutil.copy(sample_files[0], src)
    shutil.copy(sample_files[1], tgt)
    run = tmp_path / "run"
    cfg = _config(src, tgt)
    assert ensure_store(cfg, run) is not None
    assert ensure_store(cfg, run) is None  # current: left alone
    with open(tgt, "a") as f:
        f.write("one more\n")
    with open(src, "a") as f:
        f.write("uno más\n")
    assert ensure_store(cfg, run) == f"the training files changed ({src}, {tgt})"
    manifest = open_store(run).manifest
    assert len(open_store(run)) == 201
    # the tokenizer was trained on other text: trained again, from the new files
    assert manifest["tokenizer"]["trained_from"]["files"] == manifest["inputs"]["files"]
    cfg = _config(src, tgt, "data.max_src_len=30")
    assert ensure_store(cfg, run) == "the data section changed (data.max_src_len: 200 -> 30)"
    cfg = _config(src, tgt, "data.max_src_len=30", "tokenizer.vocab_size=380")
    assert ensure_store(cfg, run) == "the tokenizer section changed"
    assert Tokenizer.load(run).src_vocab_size == 380
    # once a checkpoint depends on it, the tokenizer stays (--init-from or not)
    (run / "checkpoints" / "step-00000001").mkdir(parents=True)
    other = tmp_path / "other"
    ensure_store(_config(src, tgt, "data.max_src_len=30"), other)
    assert ensure_store(cfg, run, tokenizer_from=other) is None
    shutil.rmtree(run / "checkpoints")
    assert ensure_store(cfg, run, tokenizer_from=other) == "the tokenizer changed"
    assert (run / "spm.model").read_bytes() == (other / "spm.model").read_bytes()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, sample_files) -> Path:
    run = tmp_path_factory.mktemp("prepared") / "run"
    ensure_store(_config(*sample_files), run)
    return run


def _damaged(prepared: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    return run


def test_truncated_store_file_is_named(prepared: Path, tmp_path: Path) -> None:
    run = _damaged(prepared, tmp_path)
    tokens = store_path(run) / "tgt.tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"tgt\.tokens\.bin is truncated or altered: \d+ bytes, "
                                        r"the manifest says \d+; run `heedful prepare`"):
        open_store(run)


def test_corrupt_store_file_is_named(prepared: Path, tmp_path: Path, capsys) -> None:
    run = _damaged(prepared, tmp_path)
    order = store_path(run) / "order.bin"
    raw = bytearray(order.read_bytes())
    raw[7] ^= 0xFF
    order.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"order\.bin is corrupt: its checksum does not match "
                                        r".*manifest\.json"):
        open_store(run)
    # heedful train refuses it too, with the same message, before any work
    cfg = _config(*_sample_files_of(prepared))
    cfg_path = tmp_path / "c.yaml"
    from heedful.config import save_config

    save_config(cfg, cfg_path)
    assert main(["train", str(cfg_path), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "heedful: error: " in err and "order.bin is corrupt" in err
    assert not (run / "checkpoints").exists()


def _sample_files_of(run: Path) -> tuple[str, str]:
    files = json.loads((store_path(run) / "manifest.json").read_text())["inputs"]["files"]
    return files[0]["path"], files[1]["path"]


@pytest.mark.parametrize("damage, message", [
    ("{not json", r"manifest\.json is corrupt"),
    ('{"format": "heedful-prepared-store", "format_version": 99}',
     r"manifest\.json: store format 99 is not supported"),
    ('{"format": "something else"}', r"manifest\.json is not the manifest of a heedful"),
])
def test_bad_manifest_is_named(prepared: Path, tmp_path: Path, damage: str,
                               message: str) -> None:
    run = _damaged(prepared, tmp_path)
    (store_path(run) / "manifest.json").write_text(damage)
    with pytest.raises(DataError, match=message):
        ensure_store(_config(*_sample_files_of(prepared)), run)


def test_missing_store_file_is_named(prepared: Path, tmp_path: Path) -> None:
    run = _damaged(prepared, tmp_path)
    (store_path(run) / "src.offsets.bin").unlink()
    with pytest.raises(DataError, match=r"src\.offsets\.bin is missing"):
        open_store(run)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_a_full_disk_during_prepare_keeps_the_old_store(prepared: Path, tmp_path: Path) -> None:
    run = _damaged(prepared, tmp_path)
    before = (store_path(run) / "manifest.json").read_bytes()
    src, tgt = _sample_files_of(prepared)
    # spm.model (~250 kB: the normaliser's tables) fits in 400 kB, the store does not
    big_src, big_tgt = tmp_path / "big.es", tmp_path / "big.en"
    big_src.write_text(Path(src).read_text() * 60)
    big_tgt.write_text(Path(tgt).read_text() * 60)
    proc = subprocess.run(
        [sys.executable, "-m", "heedful", "prepare", "data.dataset=null",
         f"data.train.src={big_src}", f"data.train.tgt={big_tgt}", "tokenizer.vocab_size=400",
         "train.seed=5", "--run-dir", str(run)],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "heedful: error: could not write the prepared store: " in proc.stderr
    assert ".bin: File too large; nothing was kept" in proc.stderr
    assert (store_path(run) / "manifest.json").read_bytes() == before
    open_store(run)  # the old store is intact
    assert not list(run.glob(".prepared.*"))


def test_prepare_command(tmp_path: Path, sample_files, capsys) -> None:
    run = tmp_path / "run"
    data = ["data.dataset=null", f"data.train.src={sample_files[0]}",
            f"data.train.tgt={sample_files[1]}", "tokenizer.vocab_size=400"]
    assert main(["prepare", *data, "--run-dir", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["built"] and summary["pairs"] == 200 and summary["read"] == 200
    assert main(["prepare", *data, "--run-dir", str(run)]) == 0
    assert "is current (200 pairs); nothing to do" in capsys.readouterr().out
    assert main(["prepare", *data, "--run-dir", str(run), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    lengths = np.array(open_store(run).src.lengths)
    assert lengths.dtype == np.uint16 and lengths.min() >= 2
