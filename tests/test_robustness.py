"""Bad input, tried systematically: every input loads, or stops with a DataError/ConfigError
that names the file (and line) — never another exception. Outcome counts are printed at the
end of the module (run with -s to see them)."""

from __future__ import annotations

import gzip
import json
import re
import resource
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heedful.checkpoint import find_checkpoint, verify_checkpoint
from heedful.cli import main
from heedful.config import ConfigError, load_config
from heedful.data import DataError, read_jsonl, read_lines, read_parallel, read_tsv

OUTCOMES: dict[str, Counter[str]] = {}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

PIECES = ["abc", "ñandú", "\r\n", "\r", "\n", "\x00", "\x07", "\ufeff", "\t", " ", "",
          "x" * 100_000, "\u2028", "日本", "{\"src\": \"a\", \"tgt\": \"b\"}\n", "a\tb\n"]
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
blobs = st.one_of(st.binary(max_size=3000), texts.map(lambda t: t.encode("utf-8")),
                  st.tuples(texts, st.binary(max_size=5)).map(lambda p: p[0].encode() + p[1]))


def record(reader: str, outcome: str) -> None:
    OUTCOMES.setdefault(reader, Counter())[outcome] += 1


def attempt(reader: str, fn, path: Path) -> None:
    try:
        fn()
        record(reader, "loaded")
    except DataError as err:
        assert path.name in str(err)
        record(reader, "clear error")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nfuzzed inputs per reader (outcome counts):")
    for reader, counts in sorted(OUTCOMES.items()):
        print(f"  {reader:14s} {sum(counts.values()):5d} tried  {dict(counts)}")


@FUZZ
@given(data=blobs, gz=st.booleans(), cut=st.integers(0, 50))
def test_read_lines_never_crashes(tmp_path_factory, data: bytes, gz: bool, cut: int) -> None:
    path = tmp_path_factory.mktemp("f") / "input.txt"
    if gz:
        data = gzip.compress(data)
        data = data[: max(len(data) - cut, 0)] if cut else data
    path.write_bytes(data)
    attempt("text lines" + (" (gzip)" if gz else ""), lambda: read_lines(path), path)


@FUZZ
@given(a=blobs, b=blobs)
def test_read_parallel_never_crashes(tmp_path_factory, a: bytes, b: bytes) -> None:
    d = tmp_path_factory.mktemp("p")
    (d / "x.src").write_bytes(a)
    (d / "x.tgt").write_bytes(b)

    def load() -> None:
        corpus = read_parallel(d / "x.src", d / "x.tgt")
        assert len(corpus.src) == len(corpus.tgt)
        for seg in corpus.src + corpus.tgt:
            assert "\n" not in seg and "\r" not in seg and "\x00" not in seg

    try:
        load()
        record("parallel text", "loaded")
    except DataError as err:
        assert "x.src" in str(err) or "x.tgt" in str(err)
        record("parallel text", "clear error")


@FUZZ
@given(data=blobs)
def test_read_tsv_never_crashes(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("t") / "input.tsv"
    path.write_bytes(data)
    attempt("tsv", lambda: read_tsv(path), path)


@FUZZ
@given(data=blobs, objs=st.lists(st.dictionaries(st.sampled_from(["src", "tgt", "x"]),
                                                 st.one_of(st.text(max_size=20), st.integers()),
                                                 max_size=3), max_size=5))
def test_read_jsonl_never_crashes(tmp_path_factory, data: bytes, objs: list) -> None:
    path = tmp_path_factory.mktemp("j") / "input.jsonl"
    path.write_bytes(data + "".join(json.dumps(o) + "\n" for o in objs).encode())
    attempt("jsonl", lambda: read_jsonl(path), path)


yaml_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6),
                        st.floats(allow_nan=True), st.text(max_size=8),
                        st.lists(st.integers(), max_size=3))
keys = st.sampled_from(["model.hidden_dim", "model.dropout", "model.attention", "train.lr",
                        "decode.beam_size", "train.batch_tokens", "tokenizer.vocab_size",
                        "model.nonsense", "data.dataset", "train", "model.rnn_type",
                        "decode.length_penalty", "data.train.src", "x.y.z"])


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(
    ["model:\n", "  hidden_dim: 12\n", "  - a\n", "train: [\n", ": :\n", "\t", "decode: 3\n",
     "model: {attention: dot}\n", "&a x: *a\n", "!!python/object:os.system x\n"]),
    max_size=6).map("".join)))
def test_random_yaml_gives_config_or_clear_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("c") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
        record("config yaml", "loaded")
    except ConfigError as err:
        assert str(path) in str(err)
        record("config yaml", "clear error")


@FUZZ
@given(pairs=st.lists(st.tuples(keys, yaml_values), max_size=4))
def test_random_overrides_give_config_or_clear_error(pairs: list) -> None:
    overrides = [f"{k}={json.dumps(v)}" for k, v in pairs]
    try:
        load_config(None, overrides)
        record("config keys", "loaded")
    except ConfigError as err:
        assert "config" in str(err) or "override" in str(err)
        record("config keys", "clear error")


# --------------------------------------------------------------------------- translate, disk


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sample_files) -> Path:
    run = tmp_path_factory.mktemp("robust") / "run"
    src, tgt = sample_files
    assert main(["train", "data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
                 "tokenizer.vocab_size=500", "model.embed_dim=16", "model.hidden_dim=16",
                 "train.batch_tokens=800", "train.max_steps=2", "train.valid_every=2",
                 "--run-dir", str(run), "--no-progress"]) == 0
    return run


def test_ten_thousand_lines_with_garbage(tiny_run: Path, tmp_path: Path, capsys) -> None:
    import random

    rng = random.Random(0)
    choices = ["", "   ", "Y dijo Dios.", "\u200b", "%%%%", "ñ" * 300, "a\tb", "🙂🙂",
               "palabra " * 2000]
    lines = [rng.choice(choices).encode() for _ in range(10_000)]
    bad = sorted(rng.sample(range(10_000), 25))
    for i in bad:  # not UTF-8: a lone continuation byte, a cut sequence, Latin-1
        lines[i] = rng.choice([b"\x80abc", b"se\xc3", "señal".encode("latin-1")])
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.txt"
    assert main(["translate", str(tiny_run), "-i", str(src), "-o", str(out), "--beam-size", "1",
                 "--max-len-a", "0.1", "--max-len-b", "3", "--batch-size", "256",
                 "--skip-bad-lines"]) == 0
    produced = out.read_text(encoding="utf-8").split("\n")
    assert len(produced) == 10_001 and produced[-1] == ""  # one output line per input line
    for i, (line, hyp) in enumerate(zip(lines, produced, strict=False)):
        if i in bad or not line.decode().strip():
            assert hyp == "", i
    err = capsys.readouterr().err
    assert err.count("invalid UTF-8 (byte") == 25
    assert f"in.txt, line {bad[0] + 1}: invalid UTF-8" in err
    # without --skip-bad-lines the first bad line stops the run, after the lines before it
    capsys.readouterr()
    assert main(["translate", str(tiny_run), "-i", str(src), "-o", str(out), "--beam-size", "1",
                 "--max-len-a", "0.1", "--max-len-b", "3", "--batch-size", "256"]) == 2
    err = capsys.readouterr().err
    assert f"in.txt, line {bad[0] + 1}: invalid UTF-8" in err
    assert f"(the output of the lines before it is in {out})" in err
    assert out.read_text(encoding="utf-8").split("\n") == [*produced[:bad[0]], ""]


# score answers 10,000 lines; align shares its line handling (pair_lines): 2,000 keep it quick
@pytest.mark.parametrize(("command", "count"), [("score", 10_000), ("align", 2_000)])
def test_score_and_align_answer_every_line_of_ten_thousand(tiny_run: Path, tmp_path: Path,
                                                          capsys, command: str,
                                                          count: int) -> None:
    import random

    rng = random.Random(1)
    choices = ["", "  ", "Y dijo Dios.", "\u200b", "%%%%", "ñ" * 40, "a\tb", "🙂🙂"]
    sides = []
    bad: set[int] = set()
    for side in ("src", "tgt"):
        lines = [rng.choice(choices).encode() for _ in range(count)]
        for i in rng.sample(range(count), 10):
            lines[i] = rng.choice([b"\x80abc", b"se\xc3", "señal".encode("latin-1")])
            bad.add(i)
        path = tmp_path / f"in.{side}"
        path.write_bytes(b"\n".join(lines) + b"\n")
        sides.append((path, lines))
    (src, src_lines), (tgt, tgt_lines) = sides
    out = tmp_path / "out.txt"
    argv = [command, str(tiny_run), "--src", str(src), "--tgt", str(tgt), "-o", str(out)]
    assert main([*argv, "--skip-bad-lines"]) == 0
    produced = out.read_text(encoding="utf-8").split("\n")
    assert len(produced) == count + 1 and produced[-1] == ""  # one output line per input line
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines, strict=True)):
        blank = i in bad or not s.decode().strip() or not t.decode().strip()
        assert (produced[i] == "") == blank or (command == "align" and produced[i] == ""), i
    assert capsys.readouterr().err.count("invalid UTF-8 (byte") == len(bad)
    # without --skip-bad-lines the first bad line stops the run, after the lines before it
    assert main(argv) == 2
    first = min(bad)
    assert f"line {first + 1}: invalid UTF-8" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8").split("\n") == [*produced[:first], ""]


def test_a_bad_line_comes_after_the_lines_before_it(tmp_path: Path) -> None:
    import warnings

    from heedful.errors import BadLineWarning
    from heedful.lines import iter_lines

    path = tmp_path / "x.txt"
    path.write_bytes(b"uno\ndos\n\xfftres\ncuatro\n")
    got = []
    with pytest.raises(DataError, match=r"x\.txt, line 3: invalid UTF-8 \(byte 0xff\)"):
        for line in iter_lines(path):
            got.append(line)
    assert got == ["uno", "dos"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(iter_lines(path, skip_bad=True)) == ["uno", "dos", "", "cuatro"]
    assert [w.category for w in caught] == [BadLineWarning]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


def test_disk_full_while_saving_keeps_previous_checkpoints(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = find_checkpoint(run, "latest")
    proc = subprocess.run(
        [sys.executable, "-m", "heedful", "train", "train.max_steps=4", "--resume", "--run-dir",
         str(run), "--no-progress"], capture_output=True, text=True, timeout=300,
        preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "heedful: error: could not write checkpoint" in proc.stderr
    assert "earlier checkpoints are intact" in proc.stderr
    assert find_checkpoint(run, "latest") == before
    verify_checkpoint(before)
    assert not list((run / "checkpoints").glob(".tmp-*"))


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 4 MiB filesystem (tmpfs), and a function that fills it up to ``free`` bytes left;
    skipped where this process may not mount one (not root, or a container that forbids it)."""
    import os

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    def leave_free(free: int) -> None:
        stat = os.statvfs(mount)
        (mount / "filler").write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - free, 0))

    try:
        yield mount, leave_free
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_filesystem_keeps_the_previous_checkpoint(tiny_run: Path, small_disk) -> None:
    import shutil

    mount, leave_free = small_disk
    run = mount / "run"
    shutil.copytree(tiny_run, run)
    before = find_checkpoint(run, "latest")
    size = sum(f.stat().st_size for f in before.iterdir())
    leave_free(size // 2)  # room for half a checkpoint: the save fails with ENOSPC midway
    proc = subprocess.run(
        [sys.executable, "-m", "heedful", "train", "train.max_steps=4", "--resume", "--run-dir",
         str(run), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"could not write checkpoint .*step-00000004: .*No space left on device "
                     r"\(os error 28\); earlier checkpoints are intact", proc.stderr)
    assert find_checkpoint(run, "latest") == before  # still selectable, and verifies
    verify_checkpoint(before)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the partial files are gone
    assert not (run / "checkpoints" / "step-00000004").exists()


def test_a_full_filesystem_keeps_no_half_written_store(small_disk, sample_files) -> None:
    mount, leave_free = small_disk
    run = mount / "run"
    src, tgt = sample_files
    argv = [sys.executable, "-m", "heedful", "prepare", "data.dataset=null",
            f"data.train.src={src}", f"data.train.tgt={tgt}", "tokenizer.vocab_size=500",
            "--run-dir", str(run)]
    leave_free(300_000)  # the tokenizer (~250 kB) fits, the store after it does not
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"could not write the prepared store: .*\.prepared\.tmp-\d+/\S+: No space "
                     r"left on device; nothing was kept", proc.stderr)
    assert not (run / "prepared").exists()
    assert not list(run.glob(".prepared.tmp-*"))
    (mount / "filler").unlink()  # space again: the same command builds it
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 0
    assert (run / "prepared" / "manifest.json").is_file()


def test_resume_falls_back_to_newest_intact_checkpoint(tiny_run: Path, tmp_path: Path,
                                                       capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["train", "train.max_steps=4", "--resume", "--run-dir", str(run),
                 "--no-progress"]) == 0
    newest = run / "checkpoints" / "step-00000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a crash / bad disk
    capsys.readouterr()
    assert main(["train", "train.max_steps=6", "--resume", "--run-dir", str(run),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipping a damaged checkpoint" in out and "step-00000004" in out
    assert "resuming from" in out and "step-00000002" in out


def test_crash_leftovers_are_cleaned_on_resume(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / ".tmp-step-00000004-999").mkdir()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train_lo')  # cut off by a kill
    assert main(["train", "train.max_steps=4", "--resume", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert not list((run / "checkpoints").glob(".tmp-*"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[-1].startswith("{") and json.loads(lines[-1])["step"] == 4


@pytest.mark.slow
def test_fault_injection_short() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "fault_injection.py"),
                           "--kills", "3", "--steps", "12"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["kills"] == 3 and report["successful_resumes"] == 3
    assert report["corrupt_checkpoints_found"] == 0
    assert report["max_parameter_difference"] <= 1e-6


@pytest.mark.parametrize(("where", "content", "message"), [
    ("checkpoints/best", b"\xb9H2\x05", "cannot be read as a checkpoint pointer"),
    ("checkpoints/best", b"../../etc", "does not name a checkpoint"),
    ("checkpoints/step-00002667/manifest.json", b"[1, 2]", "is corrupt (not a JSON object)"),
    ("checkpoints/step-00002667/manifest.json", b'{"format_version": 1}',
     'is corrupt (no valid "files" entry)'),
])
def test_a_corrupt_run_directory_is_named_not_crashed(tmp_path: Path, capsys, where: str,
                                                      content: bytes, message: str) -> None:
    """Found by benchmarks/fuzz.py: these corruptions escaped as AttributeError, KeyError
    and UnicodeDecodeError."""
    import shutil

    from heedful.decoding.translator import SHIPPED_MODELS_DIR

    run = tmp_path / "run"
    shutil.copytree(SHIPPED_MODELS_DIR / "bible-es-en", run)
    (run / where).write_bytes(content)
    (tmp_path / "in.txt").write_text("Y dijo Dios.\n", encoding="utf-8")
    assert main(["translate", str(run), "-i", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("heedful: error: ") and "\n" not in err
    assert message in err and str(run) in err


def test_metrics_of_empty_files_is_a_clear_error(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["metrics", str(empty), str(empty)]) == 2
    assert "no lines to score" in capsys.readouterr().err
