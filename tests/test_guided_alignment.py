"""Guided alignment: word links mapped to subwords, the loss, the links in the store and the
batches, resume with the loss on, and the links file's error paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heedful.cli import main
from heedful.config import ConfigError, load_config
from heedful.data import DataError, load_split
from heedful.nn.attention import guided_alignment_loss
from heedful.training.alignments import piece_words, subword_links, word_start_table
from heedful.training.prepare import ensure_store, prepare_data

TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "train.batch_tokens=800", "train.valid_every=4", "train.log_every=2", "train.seed=5"]


def _diagonal_links(src_lines: list[str], tgt_lines: list[str]) -> list[str]:
    """A valid links file: target word j linked to source word j * S / T (the diagonal)."""
    out = []
    for s, t in zip(src_lines, tgt_lines, strict=True):
        ns, nt = len(s.split()), len(t.split())
        out.append(" ".join(f"{min(ns - 1, j * ns // nt)}-{j}" for j in range(nt))
                   if ns and nt else "")
    return out


@pytest.fixture()
def corpus(tmp_path: Path, sample_files) -> tuple[list[str], Path]:
    """The sample corpus's overrides and its diagonal links file."""
    src, tgt = sample_files
    links = tmp_path / "links.txt"
    lines = _diagonal_links(src.read_text(encoding="utf-8").splitlines(),
                            tgt.read_text(encoding="utf-8").splitlines())
    links.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = ["data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
            f"data.train.alignments={links}"]
    return data, links


def test_word_links_map_to_every_pair_of_their_pieces() -> None:
    # source "▁el ▁per ro ▁come" (3 words), target "▁the ▁dog ▁eat s" (3 words)
    starts = np.array([True, True, False, True, True, True, True, False])
    src_words = piece_words([0, 1, 2, 3], starts)
    tgt_words = piece_words([4, 5, 6, 7], starts)
    assert src_words.tolist() == [0, 1, 1, 2] and tgt_words.tolist() == [0, 1, 2, 2]
    links = subword_links({(0, 0), (1, 1), (2, 2)}, src_words, tgt_words)
    # rows (source piece, target piece), by target then source piece
    assert links.tolist() == [[0, 0], [1, 1], [2, 1], [3, 2], [3, 3]]
    assert subword_links(set(), src_words, tgt_words).shape == (0, 2)


def test_word_starts_come_from_the_pieces(tmp_path: Path, corpus) -> None:
    data, _ = corpus
    cfg = load_config(None, [*data, *TINY])
    tok = prepare_data(cfg, tmp_path / "run").tokenizer
    table = word_start_table(tok.src)
    line = "Y dijo Dios: Sea la luz."
    ids = tok.src.encode(line)
    words = piece_words(ids, table)
    assert int(words[-1]) + 1 == len(line.split())
    pieces = tok.src.id_to_piece(ids)
    assert [p for p, w in zip(pieces, words, strict=True) if w == 2] != []
    assert "".join(p for p, w in zip(pieces, words, strict=True)
                   if w == 2).lstrip("\u2581") == "Dios:"


def test_guided_loss_is_zero_at_the_target_and_positive_elsewhere() -> None:
    links = torch.tensor([[0, 0, 1], [0, 1, 0], [0, 1, 2], [1, 0, 0]])
    target = torch.zeros(2, 2, 3)
    target[0, 0, 1] = 1.0
    target[0, 1, 0] = target[0, 1, 2] = 0.5
    target[1, 0, 0] = 1.0
    target[1, 1] = torch.tensor([0.2, 0.3, 0.5])  # a step without links: not supervised
    assert guided_alignment_loss(target, links).item() == pytest.approx(0.0, abs=1e-6)
    off = target.clone()
    off[0, 1] = torch.tensor([0.6, 0.0, 0.4])
    assert guided_alignment_loss(off, links).item() > 0.01
    uniform = torch.full((2, 2, 3), 1 / 3, requires_grad=True)
    loss = guided_alignment_loss(uniform, links)
    loss.backward()
    assert loss.item() > 0 and uniform.grad is not None and uniform.grad[0, 0, 1] < 0
    assert guided_alignment_loss(uniform, links[:0]).item() == 0.0


def test_batches_carry_each_pairs_links(tmp_path: Path, corpus) -> None:
    data, links_file = corpus
    cfg = load_config(None, [*data, *TINY, "train.guided_alignment_weight=1.0"])
    prepared = prepare_data(cfg, tmp_path / "run")
    store, tok = prepared.store, prepared.tokenizer
    assert store.links is not None and len(store.links) == len(store)
    assert store.manifest["counts"]["unguided"] == 0
    train = load_split(cfg.data, "train")
    assert train is not None and len(store) == len(train.src)  # nothing dropped here
    link_lines = links_file.read_text(encoding="utf-8").splitlines()
    src_table, tgt_table = word_start_table(tok.src), word_start_table(tok.tgt)
    from heedful.analysis.word_alignment import parse_links
    from heedful.batching import BatchStream
    from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID

    for i in (0, 17, 199):
        want = subword_links(parse_links(link_lines[i]),
                             piece_words(tok.src.encode(train.src[i]), src_table),
                             piece_words(tok.tgt.encode(train.tgt[i]), tgt_table))
        assert np.array_equal(store.links[i].reshape(-1, 2), want), i
    stream = BatchStream(store.src, store.tgt, 800, 5, PAD_ID, BOS_ID, EOS_ID,
                         order=store.order, sizes=store.sizes, links=store.links)
    batch = next(stream)
    assert batch.align is not None and batch.align.shape[1] == 3
    rows, t, s = batch.align.T
    assert bool((batch.tgt_mask[rows, t]).all()) and bool((batch.src_mask[rows, s]).all())
    # no link points at the source EOS or past the pair's own pieces
    assert bool((batch.src[rows, s] != EOS_ID).all())


def test_resume_is_exact_with_the_guided_loss(corpus, check_exact_resume) -> None:
    data, _ = corpus
    check_exact_resume([*data, *TINY], ["train.guided_alignment_weight=0.5"])


def test_a_changed_links_file_rebuilds_the_store_not_the_tokenizer(tmp_path: Path,
                                                                    corpus) -> None:
    data, links = corpus
    cfg = load_config(None, [*data, *TINY])
    run = tmp_path / "run"
    ensure_store(cfg, run)
    spm = (run / "spm.model").read_bytes()
    assert ensure_store(cfg, run) is None
    lines = links.read_text(encoding="utf-8").splitlines()
    lines[3] = "0-0"
    links.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert ensure_store(cfg, run) == "the alignments changed (data.train.alignments)"
    assert (run / "spm.model").read_bytes() == spm


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[:150], r"links\.txt has 150 lines, fewer than the training split: "
                                r"line 151 is missing"),
    (lambda lines: [*lines, "0-0"], r"links\.txt has 201 lines, more than the training "
                                    r"split's 200: line 201 has no training pair"),
    (lambda lines: [*lines[:9], "0-0 5x", *lines[10:]], r"links\.txt, line 10: '5x' is not a "
                                                        r"link"),
    (lambda lines: [*lines[:4], "0-999", *lines[5:]], r"links\.txt, line 5: link 0-999 is out "
                                                      r"of range: the pair's source has \d+ "
                                                      r"words, its target \d+"),
])
def test_a_bad_links_file_is_an_error_naming_it_and_the_line(tmp_path: Path, corpus, edit,
                                                             message: str) -> None:
    data, links = corpus
    links.write_text("\n".join(edit(links.read_text(encoding="utf-8").splitlines())) + "\n",
                     encoding="utf-8")
    cfg = load_config(None, [*data, *TINY])
    with pytest.raises(DataError, match=message):
        prepare_data(cfg, tmp_path / "run", workers=2 if "more" in message else 1)
    assert not (tmp_path / "run" / "prepared").exists()  # nothing half-written is kept


def test_guided_alignment_config_errors(tmp_path: Path, sample_files) -> None:
    src, tgt = sample_files
    with pytest.raises(ConfigError, match="train.guided_alignment_weight needs "
                                          "data.train.alignments"):
        load_config(None, ["train.guided_alignment_weight=1"])
    with pytest.raises(ConfigError, match="data.dev.alignments: alignments are read for the "
                                          "training split only"):
        load_config(None, [f"data.dev.src={src}", f"data.dev.tgt={tgt}",
                           "data.dev.alignments=x.txt"])
    with pytest.raises(ConfigError, match="model.alignment_head: 2 is not a head"):
        load_config(None, ["model.alignment_head=2"])
    with pytest.raises(DataError, match="data.train.alignments: file not found: .*nope.txt"):
        ensure_store(load_config(None, ["data.train.alignments=" + str(tmp_path / "nope.txt")]),
                     tmp_path / "run")


def test_align_corpus_writes_one_line_per_training_pair(tmp_path: Path, sample_files,
                                                        capsys) -> None:
    from heedful.analysis.statistical_aligner import find_aligner

    try:
        find_aligner()
    except DataError:
        pytest.skip("needs the optional aligner (pip install 'heedful[align]')")
    src, tgt = sample_files
    data = ["data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}"]
    links = tmp_path / "links.txt"
    assert main(["align-corpus", *data, "-o", str(links), "--model", "1", "--json"]) == 0
    assert '"pairs": 200' in capsys.readouterr().out
    lines = links.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200 and sum(bool(line) for line in lines) > 190
    assert [p.name for p in tmp_path.iterdir()] == ["links.txt"]  # no work files left
    # what it wrote trains: every pair's links map to its subwords
    cfg = load_config(None, [*data, *TINY, f"data.train.alignments={links}"])
    store = prepare_data(cfg, tmp_path / "run").store
    assert store.manifest["counts"]["unguided"] == 0
    assert store.links is not None and int(store.links.lengths.sum()) > 0


def test_align_corpus_without_the_aligner_says_how_to_get_it(monkeypatch) -> None:
    from heedful.analysis import statistical_aligner

    monkeypatch.setattr(statistical_aligner.sys, "executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DataError, match=r"eflomal-align not found: install the optional "
                                        r"aligner with pip install 'heedful\[align\]'"):
        statistical_aligner.find_aligner()


def test_align_corpus_refuses_a_config_without_source_text(tmp_path: Path, capsys) -> None:
    out = tmp_path / "links.txt"
    assert main(["align-corpus", "--preset", "image-digits", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "heedful: error: align-corpus aligns source and target words; data.source is " \
           "image" in err
    assert not out.exists()


def test_the_transformers_supervised_layer_and_head_alone_get_the_signal(tmp_path: Path) -> None:
    """model.alignment_layer / alignment_head pick one cross-attention head of a Transformer:
    the guided loss's gradient reaches that head's query projection and nothing after it."""
    from heedful.analysis.attention_alignment import run_settings
    from heedful.config import save_config
    from heedful.nn.architectures import build_model
    from heedful.training.step import GuidedAlignment

    cfg = load_config(None, [
        "model.arch=transformer", "model.attention=multihead", "model.attention_heads=2",
        "model.embed_dim=16", "model.hidden_dim=16", "model.ff_dim=32",
        "model.encoder_layers=1", "model.decoder_layers=2", "model.dropout=0",
        "model.alignment_layer=0", "model.alignment_head=1",
        f"data.train.alignments={tmp_path / 'links.txt'}", "train.guided_alignment_weight=1"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 40, 40)
    src = torch.randint(4, 40, (2, 5))
    tgt_in = torch.randint(4, 40, (2, 4))
    state = model.init_state(model.encode(src, torch.ones_like(src, dtype=torch.bool)))
    _, attention, _ = model.decode(tgt_in, state, need_weights=True)
    assert attention.shape == (2, 4, 2, 2, 5)  # (B, T, layers, heads, S)
    guided = GuidedAlignment(1.0, cfg.model.alignment_layer, cfg.model.alignment_head)
    assert torch.equal(guided.select(attention), attention[:, :, 0, 1])
    links = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 2, 4]])
    guided_alignment_loss(guided.select(attention), links).backward()
    layer0, layer1 = model.decoder[0].cross_attn, model.decoder[1]
    head_dim = 16 // 2
    grad = layer0.query_proj.weight.grad
    assert grad is not None and grad[head_dim:].abs().sum() > 0  # head 1's rows
    assert grad[:head_dim].abs().sum() == 0  # head 0 is not supervised
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in layer1.parameters())
    # heedful align reads that head of such a run by default
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    settings = run_settings(run)
    assert (settings.layer, settings.head, settings.shift) == (0, 1, 0)
