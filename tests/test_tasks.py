"""Summarization and dialogue: corpus builders, baselines, distinct-n, the chat loop, data
loading (JSONL nested fields, Hugging Face datasets)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from heedful.analysis.baselines import first_sentence, first_words
from heedful.cli import main
from heedful.config import ConfigError, load_config
from heedful.corpora import (
    build_chatterbot_pairs,
    build_debian_summ,
    context_pairs,
    parse_translation_index,
    split_of,
)
from heedful.data import DataError, load_split, read_jsonl
from heedful.datasets import dataset_file
from heedful.decoding.chat import ChatSession, distinct_n
from heedful.presets import get_preset

INDEX = """Package: alpha
Description-md5: 11
Description-en: tool that does alpha things
 Alpha is a small program. It does
 alpha things quickly and well.
 .
 This package contains the alpha binary and more words here.

Package: beta
Description-md5: 22
Description-en: short one
 Too short.

Package: gamma
Description-md5: 33
Description-en: gamma library
 Alpha is a small program. It does
 alpha things quickly and well.
 .
 This package contains the alpha binary and more words here.

Package: aardvark
Description-md5: 11
Description-en: tool that does alpha things
 Alpha is a small program. It does
 alpha things quickly and well.
 .
 This package contains the alpha binary and more words here.
"""


def test_parse_translation_index_paragraphs() -> None:
    [first, *_] = parse_translation_index(INDEX)
    assert first.package == "alpha" and first.synopsis == "tool that does alpha things"
    assert first.paragraphs == ["Alpha is a small program. It does alpha things quickly and well.",
                                "This package contains the alpha binary and more words here."]


def test_build_debian_summ_recipe(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb_dists_x_main_i18n_Translation-en.gz").write_bytes(gzip.compress(INDEX.encode()))
    stats = build_debian_summ(tmp_path / "out", lists)
    # md5 11 once (first package by name: aardvark), beta too short (2 words), gamma's long
    # description duplicates md5 11's -> dropped
    assert stats["descriptions"] == 3
    assert stats["dropped"] == {"no_long_description": 0, "length": 1, "duplicate_source": 1}
    split = split_of("Alpha is a small program. It does alpha things quickly and well.")
    name = f"{split}.tgt.gz" if split == "train" else f"{split}.tgt"
    path = tmp_path / "out" / name
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode()
    assert text == "tool that does alpha things\n"


def test_heedful_data_without_index_files_says_how_to_fetch_them(tmp_path: Path, capsys) -> None:
    assert main(["data", "debian-desc", "--lists", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no *_i18n_Translation-en* files in" in err and "Acquire::Languages=en" in err
    assert not (tmp_path / "out").exists()


def test_shipped_summarization_sample_is_attributed() -> None:
    src = dataset_file("debian-desc-summ", "sample.src").read_text(encoding="utf-8").splitlines()
    tgt = dataset_file("debian-desc-summ", "sample.tgt").read_text(encoding="utf-8").splitlines()
    ids = dataset_file("debian-desc-summ", "sample.ids").read_text(encoding="utf-8").splitlines()
    assert len(src) == len(tgt) == len(ids) == 200
    assert all(":" in i for i in ids)
    assert "license" in dataset_file("debian-desc-summ", "README.md").read_text().lower()


def test_context_pairs_join_previous_turns() -> None:
    turns = ["hi", "hello", "how are you", "fine"]
    assert context_pairs(turns, 2) == [("hi", "hello"), ("hi <sep> hello", "how are you"),
                                       ("hello <sep> how are you", "fine")]
    assert context_pairs(turns, 1)[2] == ("how are you", "fine")


def test_chatterbot_pairs_from_the_real_package(tmp_path: Path) -> None:
    stats = build_chatterbot_pairs(tmp_path, context_turns=3)
    pairs = stats["pairs"]
    assert isinstance(pairs, dict) and pairs["train"] > 1000 and pairs["test"] > 50
    train_src = gzip.decompress((tmp_path / "train.src.gz").read_bytes()).decode().splitlines()
    assert any(line.count("<sep>") == 2 for line in train_src)
    assert not any(line.count("<sep>") > 2 for line in train_src)


def test_baselines_hand_checked() -> None:
    text = "GNU Foo is a tool, e.g. for bars. It is fast. Version 1.2 is here."
    assert first_sentence(text) == "GNU Foo is a tool, e.g. for bars."
    assert first_sentence("no boundary here") == "no boundary here"
    assert first_words(text, 3) == "GNU Foo is"
    with pytest.raises(ValueError, match="n >= 1"):
        first_words(text, 0)


def test_baseline_cli_is_a_filter(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "heedful", "baseline", "first-words", "-n", "2"],
                         input="a b c\nd e\n", capture_output=True, text=True, check=True)
    assert out.stdout == "a b\nd e\n"


def test_distinct_n_hand_checked() -> None:
    texts = ["I am fine", "I am here"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # i, am, fine, here of 6 unigrams
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # (i am) twice, (am fine), (am here)
    assert distinct_n([""], 2) == 0.0


def test_jsonl_nested_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"translation": {"de": "Hallo", "en": "Hello"}}) + "\n")
    corpus = read_jsonl(path, "translation.de", "translation.en")
    assert (corpus.src, corpus.tgt) == (["Hallo"], ["Hello"])
    with pytest.raises(DataError, match=r"line 1: missing field 'translation.fr'"):
        read_jsonl(path, "translation.fr", "translation.en")


def test_hugging_face_dataset_from_a_local_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"document": ["a long text one", "another long text"], "summary": ["one", "two"]}
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows),
        "validation": datasets.Dataset.from_dict(rows),
    }).save_to_disk(str(tmp_path / "ds"))
    cfg = load_config(None, ["data.dataset=null", "data.format=hf",
                             f"data.hf_dataset={tmp_path / 'ds'}", "data.train.split=train",
                             "data.dev.split=validation", "data.src_field=document",
                             "data.tgt_field=summary"])
    train_split = load_split(cfg.data, "train")
    assert train_split is not None and train_split.tgt == ["one", "two"]
    dev = load_split(cfg.data, "dev")
    assert dev is not None and dev.src[0] == "a long text one"
    bad = cfg.data.model_copy(update={"tgt_field": "headline"})
    with pytest.raises(DataError, match="field 'headline' is missing"):
        load_split(bad, "train")
    with pytest.raises(ConfigError, match="data.format: hf and data.hf_dataset go together"):
        load_config(None, ["data.dataset=null", "data.format=hf", "data.train.split=train"])


def _summ_overrides() -> list[str]:
    folder = dataset_file("debian-desc-summ", "sample.src").parent
    return [f"data.{split}.{side}={folder}/sample.{side}" for split in ("train", "dev", "test")
            for side in ("src", "tgt")]


def test_summarize_preset_trains_and_reports_rouge(tmp_path: Path, capsys) -> None:
    base = get_preset("summarize")
    assert base.model.copy_attention and base.model.attention == "coverage"
    run = tmp_path / "summ"
    assert main(["train", "--preset", "summarize", *_summ_overrides(), "tokenizer.vocab_size=600",
                 "model.hidden_dim=32", "model.embed_dim=16", "train.max_steps=3",
                 "train.valid_every=3", "data.dev_limit=5", "--run-dir", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--rouge", "--json", "--beam-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["rouge"]) == {"rouge1", "rouge2", "rougeL"}


@pytest.fixture(scope="module")
def dialogue_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dialogue")
    build_chatterbot_pairs(tmp / "data", context_turns=2)
    overrides = [f"data.{split}.{side}={tmp / 'data'}/{split}.{side}{gz}"
                 for split, gz in (("train", ".gz"), ("dev", ""), ("test", ""))
                 for side in ("src", "tgt")]
    run = tmp / "run"
    cfg = get_preset("dialogue")
    assert cfg.tokenizer.user_symbols == ["<sep>"]
    assert main(["train", "--preset", "dialogue", *overrides, "model.hidden_dim=32",
                 "model.embed_dim=16", "train.max_steps=2", "train.valid_every=2",
                 "data.dev_limit=10", "--run-dir", str(run), "--no-progress"]) == 0
    return run


def test_separator_is_one_piece(dialogue_run: Path) -> None:
    from heedful.decoding.translator import Translator

    tok = Translator.from_checkpoint(dialogue_run).tokenizer
    assert "<sep>" in tok.src_pieces(tok.encode_src(["hi <sep> hello"])[0])


def test_chat_loop_keeps_and_resets_context(dialogue_run: Path) -> None:
    lines = "Hello\nHow are you\n/reset\nWhat is AI\n/quit\nnever read\n"
    out = subprocess.run([sys.executable, "-m", "heedful", "chat", str(dialogue_run), "--json",
                          "--context-turns", "3", "--max-len-b", "5"],
                         input=lines, capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 4  # 3 replies + the reset; nothing after /quit
    first, second, reset, third = records
    assert first["context"] == "Hello"
    # the second turn sees: your first message, the model's reply, your new message
    assert second["context"] == " <sep> ".join(
        ["Hello", first["reply"], "How are you"][-3:]).replace("  ", " ")
    assert reset == {"reset": True}
    assert third["context"] == "What is AI"


def test_chat_session_window(dialogue_run: Path) -> None:
    class Echo:
        def translate(self, lines, **kwargs):
            from heedful.decoding.translator import Translation
            return [Translation(f"re {lines[0][-3:]}", 0.0)]

    chat = ChatSession(Echo(), context_turns=2)
    chat.respond("one")
    context, _ = chat.respond("two")
    assert context == "re one <sep> two"  # the last two turns only
    chat.reset()
    assert chat.context("three") == "three"


def test_evaluate_reports_distinct_and_perplexity(dialogue_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(dialogue_run), "--distinct", "--perplexity", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= report["distinct_1"] <= 1 and 0 <= report["distinct_2"] <= 1
    assert report["perplexity"] > 1


def test_metrics_command_scores_any_output_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "hyp").write_text("the cat sat\na dog\n", encoding="utf-8")
    (tmp_path / "ref").write_text("the cat sat\nthe dog\n", encoding="utf-8")
    assert main(["metrics", str(tmp_path / "hyp"), str(tmp_path / "ref"), "--rouge",
                 "--distinct", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rouge"]["rouge1"] == pytest.approx(100 * (1 + 0.5) / 2)  # F1 1.0 and 0.5
    assert report["distinct_1"] == 1.0 and report["distinct_2"] == 1.0
    assert report["num_sentences"] == 2


def test_lowercased_bleu_is_reported_beside_the_mixed_case_one(tmp_path: Path, capsys) -> None:
    (tmp_path / "hyp").write_text("The Cat sat on the Mat .\nA man runs .\n", encoding="utf-8")
    (tmp_path / "ref").write_text("the cat sat on the mat .\na man runs .\n", encoding="utf-8")
    assert main(["metrics", str(tmp_path / "hyp"), str(tmp_path / "ref"), "--lowercase-bleu",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bleu_lc"] == 100.0 and report["bleu"] < 60  # case counts only in "bleu"
    assert "|case:lc|" in report["bleu_lc_signature"]
    assert main(["metrics", str(tmp_path / "hyp"), str(tmp_path / "ref"),
                 "--lowercase-bleu"]) == 0
    assert "(lowercased)" in capsys.readouterr().out
