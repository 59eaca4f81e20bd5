"""The console script end to end on a small real sample, and its error paths."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from heedful.cli import main

TINY = [
    "tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
    "train.batch_tokens=800", "train.valid_every=4", "train.log_every=2", "train.seed=5",
    "decode.beam_size=3",
]


def data_overrides(src: Path, tgt: Path) -> list[str]:
    return ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, sample_files) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", *data_overrides(*sample_files), *TINY, "train.max_steps=8",
                 "--run-dir", str(run), "--no-progress"])
    assert code == 0
    return run


def test_run_directory_is_self_contained(trained_run: Path) -> None:
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "spm.model", "train.log", "metrics.jsonl", "checkpoints"} <= names
    metrics = (trained_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in metrics]
    assert any("dev_bleu" in r for r in records)
    assert any("tok_per_s" in r for r in records)
    assert (trained_run / "checkpoints" / "best").read_text().strip().startswith("step-")


def test_translate_stdin_keeps_one_line_per_input(trained_run: Path, monkeypatch, capsys
                                                  ) -> None:
    text = "Y dijo Dios: Sea la luz.\n\n   \nY fué la luz.\n\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["translate", str(trained_run)]) == 0
    out = capsys.readouterr().out
    lines = out.split("\n")[:-1]
    assert len(lines) == 5
    assert lines[1] == "" and lines[2] == "" and lines[4] == ""


def test_translate_files_and_json_nbest(trained_run: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.es"
    src.write_text("Y dijo Dios.\nhola\n")
    out = tmp_path / "out.en"
    assert main(["translate", str(trained_run), "-i", str(src), "-o", str(out)]) == 0
    assert len(out.read_text().split("\n")) == 3
    assert main(["translate", str(trained_run), "-i", str(src), "--json", "--n-best", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["n_best"]) == 2


def test_source_pieces_end_with_one_eos_and_long_inputs_are_capped(trained_run: Path) -> None:
    from heedful.decoding.translator import MAX_SOURCE_PIECES, Translator
    from heedful.errors import LongInputWarning

    translator = Translator.from_checkpoint(trained_run)
    with pytest.warns(LongInputWarning, match="input line 2 has .* subwords"):
        short, long = translator.translate(["Y dijo Dios.", "palabra " * 3000], beam_size=1,
                                           max_len_a=0.01, max_len_b=2)
    assert short.src_pieces[-1] == "</s>" and short.src_pieces[-2] != "</s>"
    assert len(long.src_pieces) == MAX_SOURCE_PIECES and long.src_pieces[-1] == "</s>"


def test_evaluate_json(trained_run: Path, capsys) -> None:
    assert main(["evaluate", str(trained_run), "--split", "test", "--json",
                 "--beam-size", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_sentences"] == 200
    assert "BLEU" not in report and report["bleu_signature"].startswith("nrefs:1")
    assert 0.0 <= report["chrf"] <= 100.0


def test_attention_plot(trained_run: Path, tmp_path: Path) -> None:
    png = tmp_path / "attn.png"
    assert main(["attention", str(trained_run), "Y dijo Dios: Sea la luz.", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_resume_matches_uninterrupted_run(tmp_path: Path, sample_files) -> None:
    data = data_overrides(*sample_files)
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *data, *TINY, "train.max_steps=8", "--run-dir", str(full),
                 "--no-progress"]) == 0
    # a run directory holding a prepared store and no checkpoint: a fresh run on that store
    assert main(["prepare", *data, *TINY, "--run-dir", str(part)]) == 0
    assert main(["train", *data, *TINY, "train.max_steps=4", "--run-dir", str(part),
                 "--no-progress"]) == 0
    assert "using the prepared store in" in (part / "train.log").read_text()
    assert main(["train", "train.max_steps=8", "--resume", "--run-dir", str(part),
                 "--no-progress"]) == 0
    a = load_file(str(full / "checkpoints" / "step-00000008" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-00000008" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_transformer_end_to_end(tmp_path: Path, sample_files, capsys) -> None:
    run = tmp_path / "tf"
    assert main(["train", "--preset", "transformer-small", *data_overrides(*sample_files),
                 *TINY, "model.ff_dim=64", "model.attention_heads=2", "model.encoder_layers=2",
                 "model.decoder_layers=2", "train.max_steps=4", "--run-dir", str(run),
                 "--no-progress"]) == 0
    png = tmp_path / "tf.png"
    assert main(["attention", str(run), "Y dijo Dios.", "-o", str(png), "--beam-size", "2"]) == 0
    assert png.stat().st_size > 5000


def test_init_from_fine_tunes_with_fresh_optimizer(trained_run: Path, tmp_path: Path,
                                                   sample_files) -> None:
    run = tmp_path / "ft"
    assert main(["train", *data_overrides(*sample_files), *TINY, "train.max_steps=2",
                 "--init-from", str(trained_run), "--run-dir", str(run), "--no-progress"]) == 0
    assert (run / "spm.model").read_bytes() == (trained_run / "spm.model").read_bytes()
    state = json.loads((run / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["step"] == 2


# --------------------------------------------------------------------------- error paths


def run_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("heedful: error: ")
    return err


def test_error_mismatched_line_counts(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.es").write_text("uno\ndos\ntres\n")
    (tmp_path / "a.en").write_text("one\n")
    err = run_error(["train", *data_overrides(tmp_path / "a.es", tmp_path / "a.en"),
                     "--run-dir", str(tmp_path / "r"), "--no-progress"], capsys)
    assert "a.es has 3 lines" in err and "a.en has 1 lines" in err


def test_error_unknown_config_key(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  atention: dot\n")
    err = run_error(["train", str(cfg), "--run-dir", str(tmp_path / "r")], capsys)
    assert "unknown key 'model.atention'; did you mean 'model.attention'?" in err


def test_error_vocabulary_too_small(tmp_path: Path, sample_files, capsys) -> None:
    err = run_error(["train", *data_overrides(*sample_files), "tokenizer.vocab_size=100",
                     "--run-dir", str(tmp_path / "r"), "--no-progress"], capsys)
    assert "tokenizer.vocab_size (100) does not fit this corpus" in err


def test_error_wrong_type(tmp_path: Path, capsys) -> None:
    err = run_error(["train", "train.batch_tokens=lots", "--run-dir", str(tmp_path / "r")],
                    capsys)
    assert "train.batch_tokens: Input should be a valid integer" in err


def test_error_run_dir_without_checkpoint(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("name: x\n")
    err = run_error(["translate", str(tmp_path)], capsys)
    assert "has no checkpoint" in err


def test_error_not_a_run_dir_nor_model(capsys) -> None:
    err = run_error(["translate", "no-such-run-or-model"], capsys)
    assert "neither a run directory nor a shipped model" in err


def test_error_invalid_utf8_input(trained_run: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.es"
    bad.write_bytes(b"hola\n\xff\xfe\n")
    err = run_error(["translate", str(trained_run), "-i", str(bad)], capsys)
    assert "bad.es, line 2: invalid UTF-8" in err


def test_error_invalid_utf8_on_stdin(trained_run: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hola\nadi\xf3s\n")))
    err = run_error(["translate", str(trained_run)], capsys)
    assert "<stdin>, line 2: invalid UTF-8" in err


def test_python_dash_m_runs_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "heedful", "translate", "nothing-here"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "heedful: error:" in proc.stderr


def test_a_bug_is_reported_as_one_with_its_traceback(monkeypatch, capsys) -> None:
    import heedful.cli.bench

    def broken(args: object) -> int:
        raise KeyError("step")

    monkeypatch.setattr(heedful.cli.bench, "cmd_presets", broken)
    assert main(["presets"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("heedful: internal error (this is a bug in heedful): KeyError: 'step'")
    assert "Traceback" in err and "heedful: error: 'step'" not in err
    assert err.rstrip().splitlines()[-1].endswith("the command line: heedful presets")


@pytest.mark.parametrize(("argv", "message"), [
    (["baseline", "first-words", "-n", "0"], "-n must be at least 1 (got 0)"),
    (["train", "--preset", "no-such-preset"], "unknown preset 'no-such-preset'; presets: "),
])
def test_a_user_error_is_one_line_with_status_2(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"heedful: error: {message}")


def test_decode_flags_are_derived_from_the_decode_options() -> None:
    from heedful.cli import build_parser
    from heedful.cli.options import decode_overrides
    from heedful.decoding.options import DECODE_OPTION_NAMES

    parser = build_parser()
    args = parser.parse_args(["translate", "m"])
    assert all(getattr(args, name) is None for name in DECODE_OPTION_NAMES)
    assert decode_overrides(args) == {}
    args = parser.parse_args(["translate", "m", "--beam-size", "3", "--sample", "--top-p", "0.9",
                              "--beam-stop", "top_finished", "--quantize", "int8"])
    assert decode_overrides(args) == {"beam_size": 3, "sample": True, "top_p": 0.9,
                                      "beam_stop": "top_finished"}
    with pytest.raises(SystemExit):
        parser.parse_args(["translate", "m", "--beam-stop", "sometimes"])


def test_an_unwritable_output_path_is_a_user_error(tmp_path: Path, capsys) -> None:
    code = main(["baseline", "first-words", "-n", "2", "-i", str(tmp_path / "missing.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing.txt" in err


# --------------------------------------------------------------------------- streaming


def test_translate_score_and_align_stream_in_chunks(tmp_path: Path, monkeypatch,
                                                    capsys) -> None:
    import heedful.cli.streams
    import heedful.decoding.translator
    from heedful.data import read_lines
    from heedful.datasets import dataset_split

    dev_src, dev_tgt = dataset_split("bible-es-en", "dev")
    src, tgt = read_lines(dev_src)[:16], read_lines(dev_tgt)[:16]
    src[5] = ""  # an empty input line gives an empty output line, in its place
    (tmp_path / "s.es").write_text("\n".join(src) + "\n")
    (tmp_path / "s.en").write_text("\n".join(tgt) + "\n")
    pair = ["--src", str(tmp_path / "s.es"), "--tgt", str(tmp_path / "s.en")]

    def outputs() -> dict[str, list[str]]:
        runs = {"translate": ["translate", "bible-es-en", "-i", str(tmp_path / "s.es"),
                              "--beam-size", "1"],
                "score": ["score", "bible-es-en", *pair], "align": ["align", "bible-es-en", *pair]}
        out = {}
        for name, argv in runs.items():
            assert main(argv) == 0
            out[name] = capsys.readouterr().out.splitlines()
        return out

    whole = outputs()
    monkeypatch.setattr(heedful.decoding.translator, "STREAM_CHUNK", 6)  # 3 chunks
    monkeypatch.setattr(heedful.cli.streams, "PAIR_LINES", 2)  # 8 chunks of pairs
    chunked = outputs()
    assert len(whole["translate"]) == 16 and whole["translate"][5] == ""
    assert chunked["translate"] == whole["translate"]
    assert chunked["align"] == whole["align"] and len(whole["align"]) == 16
    for a, b in zip(chunked["score"], whole["score"], strict=True):
        assert [float(x) for x in a.split()] == pytest.approx([float(x) for x in b.split()],
                                                              abs=2e-4)


def test_translate_stream_reads_its_input_lazily() -> None:
    import itertools

    from heedful.decoding.translator import Translator

    translator = Translator.from_checkpoint("bible-es-en")
    endless = itertools.repeat("Y dijo Dios.")  # never ends: a list of it never would
    first = list(itertools.islice(translator.translate_stream(endless, chunk_size=4,
                                                              beam_size=1), 10))
    assert len(first) == 10 and len({t.text for t in first}) == 1 and first[0].text
