"""Length analysis, plots, the HTML export, and the analysis commands end to end."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.analysis.by_length import (
    assign_buckets,
    bucket_bounds,
    by_length,
    parse_edges,
    plot_by_length,
)
from heedful.analysis.plots import attention_html, plot_alignment, plot_attention_grid
from heedful.cli import main
from heedful.datasets import dataset_file

PNG = b"\x89PNG\r\n\x1a\n"

# ----------------------------------------------------------------------------- buckets


def test_default_buckets_and_labels() -> None:
    assert [b[0] for b in bucket_bounds((10, 20, 30, 40))] == [
        "1-10", "11-20", "21-30", "31-40", "41+"]
    lengths = [1, 10, 11, 20, 21, 40, 41, 300]
    sources = [" ".join(["w"] * n) for n in lengths]
    assert assign_buckets(sources, (10, 20, 30, 40)) == [0, 0, 1, 1, 2, 3, 4, 4]
    assert assign_buckets([""], (10,)) == [0]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 80), min_size=1, max_size=60),
       st.lists(st.integers(1, 70), min_size=1, max_size=6, unique=True))
def test_every_sentence_lands_in_exactly_one_bucket(lengths: list[int], edges: list[int]
                                                    ) -> None:
    edges = sorted(edges)
    sources = [" ".join(["x"] * n) for n in lengths]
    index = assign_buckets(sources, edges)
    bounds = bucket_bounds(edges)
    for n, k in zip(lengths, index, strict=True):
        _, lo, hi = bounds[k]
        assert (n <= hi if hi is not None else True) and (n >= lo or k == 0)
    refs = ["a b c"] * len(sources)
    buckets = by_length(sources, refs, refs, edges, samples=5)
    assert sum(b.sentences for b in buckets) == len(sources)


def test_bootstrap_interval_brackets_the_score() -> None:
    refs = [f"the cat number {i} sat on the mat today" for i in range(60)]
    hyps = [r if i % 3 else "a dog sat on a mat" for i, r in enumerate(refs)]
    srcs = [" ".join(["w"] * (5 + (i % 30))) for i in range(60)]
    buckets = by_length(srcs, hyps, refs, (10, 20), samples=300)
    for b in buckets:
        assert b.bleu_low <= b.bleu <= b.bleu_high
        assert b.chrf_low <= b.chrf <= b.chrf_high
    perfect = by_length(srcs, refs, refs, (10, 20), samples=50)
    assert all(b.bleu == b.bleu_low == b.bleu_high == 100.0 for b in perfect)


def test_bucket_edges_parse_with_clear_errors() -> None:
    assert parse_edges("10,20,30,40") == (10, 20, 30, 40)
    for bad in ("10,5", "ten", "0,10", ""):
        with pytest.raises(ValueError, match="--buckets"):
            parse_edges(bad)


# ----------------------------------------------------------------------------- pictures


def test_plots_are_written_and_not_empty(tmp_path: Path) -> None:
    refs = ["the cat sat on the mat"] * 20
    srcs = [" ".join(["w"] * n) for n in range(1, 41, 2)]
    curves = {"a": by_length(srcs, refs, refs, samples=10),
              "b": by_length(srcs, ["the dog"] * 20, refs, samples=10)}
    for path in (plot_by_length(curves, tmp_path / "len.png"),
                 plot_attention_grid(np.random.rand(4, 2, 3, 5), list("abcde"), list("wxyz"),
                                     tmp_path / "grid.png"),
                 plot_alignment(np.random.rand(3, 4), list("abcd"), list("xyz"),
                                tmp_path / "align.png", predicted={(0, 0), (3, 2)},
                                sure={(0, 0)}, possible={(0, 0), (1, 1)})):
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_plot_shapes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not \\(T_out=2, L, H, S=3\\)"):
        plot_attention_grid(np.zeros((2, 3)), list("abc"), list("xy"), tmp_path / "g.png")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_export_is_self_contained(tmp_path: Path) -> None:
    weights = np.random.rand(3, 2, 4, 5)
    src = ["▁Y", "▁dijo", "</script>", "▁Dios", "</s>"]  # a label that would break naive HTML
    path = attention_html(weights, src, ["▁And", "▁God", "</s>"], tmp_path / "a.html",
                          title="Y dijo <Dios>")
    page = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    # nothing is fetched: no external scripts, styles, images or links
    for tag, attrs in parser.tags:
        assert not attrs.get("src") and not (tag == "link" and attrs.get("href")), (tag, attrs)
    assert "http://" not in page and "https://" not in page
    payload = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert payload is not None
    data = json.loads(payload.group(1).replace("<\\/", "</"))
    assert data["src"] == src and np.allclose(data["weights"], weights, atol=1e-4)
    assert "Y dijo &lt;Dios&gt;" in page


# ----------------------------------------------------------------------------- commands

TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "train.batch_tokens=800", "train.valid_every=4", "train.log_every=2", "train.seed=5",
        "decode.beam_size=2"]


@pytest.fixture(scope="module")
def dev_subset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 12 dev verses with their gold links (real data)."""
    out = tmp_path_factory.mktemp("dev")
    files = {}
    for name in ("dev.es", "dev.en", "dev.align.sure", "dev.align"):
        lines = dataset_file("bible-es-en", name).read_text(encoding="utf-8").splitlines()[:12]
        files[name] = out / name
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def _train(run: Path, extra: list[str]) -> Path:
    src, tgt = dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
    data = ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]
    assert main(["train", *data, *TINY, "train.max_steps=4", *extra, "--run-dir", str(run),
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("an") / "rnn", [])


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("an") / "tf", [
        "model.arch=transformer", "model.attention=multihead", "model.attention_heads=2",
        "model.ff_dim=64", "model.encoder_layers=2", "model.decoder_layers=2",
        "model.input_feeding=false"])


def test_evaluate_by_length_and_alignment_json(rnn_run: Path, dev_subset, tmp_path: Path,
                                               capsys) -> None:
    plot = tmp_path / "len.png"
    assert main(["evaluate", str(rnn_run), "--src", str(dev_subset["dev.es"]), "--ref",
                 str(dev_subset["dev.en"]), "--by-length", "--buckets", "20,40",
                 "--bootstrap", "20", "--plot", str(plot), "--align",
                 str(dev_subset["dev.align.sure"]), "--align-possible",
                 str(dev_subset["dev.align"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [b["label"] for b in report["by_length"]] == ["1-20", "21-40", "41+"]
    assert sum(b["sentences"] for b in report["by_length"]) == 12
    assert plot.read_bytes().startswith(PNG)
    a = report["alignment"]
    assert 0 <= a["aer"] <= 1 and 0 <= a["aer_restricted"] <= 1 and a["sentences"] == 12
    assert a["predicted_links_restricted"] <= a["predicted_links"]
    assert a["settings"].startswith("argmax")


def test_align_writes_pharaoh_lines_within_the_sentences(rnn_run: Path, dev_subset,
                                                          capsys) -> None:
    assert main(["align", str(rnn_run), "--src", str(dev_subset["dev.es"]), "--tgt",
                 str(dev_subset["dev.en"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    srcs = dev_subset["dev.es"].read_text(encoding="utf-8").splitlines()
    tgts = dev_subset["dev.en"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    for line, s, t in zip(lines, srcs, tgts, strict=True):
        links = [tuple(map(int, x.split("-"))) for x in line.split()]
        assert len(links) == len(t.split(" "))  # argmax: one link per target word
        assert all(0 <= i < len(s.split(" ")) and 0 <= j < len(t.split(" ")) for i, j in links)


def test_align_tune_stores_settings_used_by_default(transformer_run: Path, dev_subset,
                                                     capsys) -> None:
    assert main(["align", str(transformer_run), "--tune", "--dev-src", str(dev_subset["dev.es"]),
                 "--dev-tgt", str(dev_subset["dev.en"]), "--dev-align",
                 str(dev_subset["dev.align.sure"]), "--dev-align-possible",
                 str(dev_subset["dev.align"]), "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    # layers {mean, 0, 1} x heads {mean, 0, 1} x shifts {0, 1} x 8 extraction methods
    assert tuned["candidates"] == 3 * 3 * 2 * 8
    stored = json.loads((transformer_run / "alignment.json").read_text())
    assert "dev.es" in stored["tuned_on"]
    assert main(["evaluate", str(transformer_run), "--src", str(dev_subset["dev.es"]), "--ref",
                 str(dev_subset["dev.en"]), "--align", str(dev_subset["dev.align.sure"]),
                 "--align-possible", str(dev_subset["dev.align"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["alignment"]
    # the stored settings are the default, and on the same pairs they reproduce the tuned AER
    assert report["aer_restricted"] == pytest.approx(tuned["aer_restricted"])


def test_score_prints_total_and_per_token(rnn_run: Path, dev_subset, capsys) -> None:
    assert main(["score", str(rnn_run), "--src", str(dev_subset["dev.es"]), "--tgt",
                 str(dev_subset["dev.en"]), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12
    for r in rows:
        assert r["log_prob"] < 0 and r["per_token"] == pytest.approx(
            r["log_prob"] / r["tokens"], abs=1e-3)


def test_compare_two_runs(rnn_run: Path, transformer_run: Path, dev_subset, tmp_path: Path,
                          capsys) -> None:
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(rnn_run), str(transformer_run), "--labels", "rnn,transformer",
                 "--src", str(dev_subset["dev.es"]), "--ref", str(dev_subset["dev.en"]),
                 "--bootstrap", "10", "--plot", str(plot), "--beam-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "rnn" in out and "transformer" in out and "41+" in out
    assert plot.read_bytes().startswith(PNG)


def test_attention_grid_and_html(transformer_run: Path, tmp_path: Path, capsys) -> None:
    png, page = tmp_path / "grid.png", tmp_path / "a.html"
    assert main(["attention", str(transformer_run), "Y dijo Dios.", "--grid", "-o", str(png),
                 "--html", str(page), "--max-len-b", "4"]) == 0
    assert png.read_bytes().startswith(PNG)
    assert "application/json" in page.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- error paths


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("heedful: error: ")
    return err


def test_error_gold_with_wrong_line_count(rnn_run: Path, dev_subset, tmp_path: Path,
                                          capsys) -> None:
    short = tmp_path / "short.align"
    short.write_text("0-0\n", encoding="utf-8")
    err = _error(["evaluate", str(rnn_run), "--src", str(dev_subset["dev.es"]), "--ref",
                  str(dev_subset["dev.en"]), "--align", str(short)], capsys)
    assert "short.align: 1 lines of sure links for 12 sentences" in err


def test_error_bad_link_names_file_and_line(rnn_run: Path, dev_subset, tmp_path: Path,
                                            capsys) -> None:
    bad = tmp_path / "bad.align"
    bad.write_text("0-0\n1:2\n" + "\n" * 10, encoding="utf-8")
    err = _error(["evaluate", str(rnn_run), "--src", str(dev_subset["dev.es"]), "--ref",
                  str(dev_subset["dev.en"]), "--align", str(bad)], capsys)
    assert "bad.align, line 2: '1:2' is not a link" in err


def test_error_layer_out_of_range(transformer_run: Path, dev_subset, capsys) -> None:
    err = _error(["align", str(transformer_run), "--src", str(dev_subset["dev.es"]), "--tgt",
                  str(dev_subset["dev.en"]), "--align-layer", "5"], capsys)
    assert "--layer 5: the model has 2 decoder layer(s)" in err
    err = _error(["align", str(transformer_run), "--src", str(dev_subset["dev.es"]), "--tgt",
                  str(dev_subset["dev.en"]), "--align-head", "first"], capsys)
    assert "--align-head 'first': give an index or 'mean'" in err


def test_error_align_without_attention(tmp_path: Path, dev_subset, capsys) -> None:
    run = _train(tmp_path / "none", ["model.attention=none", "model.input_feeding=false"])
    capsys.readouterr()
    err = _error(["align", str(run), "--src", str(dev_subset["dev.es"]), "--tgt",
                  str(dev_subset["dev.en"])], capsys)
    assert "has no attention (attention: none)" in err


def test_error_bad_buckets_and_missing_pairs(rnn_run: Path, capsys) -> None:
    err = _error(["evaluate", str(rnn_run), "--by-length", "--buckets", "30,10"], capsys)
    assert "--buckets '30,10'" in err
    err = _error(["align", str(rnn_run)], capsys)
    assert "needs --src and --tgt" in err
