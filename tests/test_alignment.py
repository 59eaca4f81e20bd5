"""Alignment error rate, subword-to-word merging, link extraction, forced decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.analysis.word_alignment import (
    alignment_scores,
    encode_words,
    extract_links,
    format_links,
    parse_links,
    read_alignments,
    word_matrix,
)
from heedful.data import DataError
from heedful.datasets import dataset_file
from heedful.decoding.forced import force_decode
from heedful.decoding.translator import Translator
from heedful.tokenizer import Tokenizer

# ----------------------------------------------------------------------------- AER


def test_aer_precision_recall_by_hand() -> None:
    predicted = [{(0, 0), (1, 1), (2, 1)}]
    sure = [{(0, 0), (1, 2)}]
    possible = [{(0, 0), (1, 2), (2, 1)}]
    s = alignment_scores(predicted, sure, possible)
    # |A|=3, |A∩S|=1, |A∩P|=2, |S|=2: AER = 1 - (1+2)/(3+2) = 0.4
    assert s.aer == pytest.approx(0.4)
    assert s.precision == pytest.approx(2 / 3, abs=1e-4)
    assert s.recall == pytest.approx(0.5)
    # every predicted link's words are annotated in P, so the restricted set is the same
    assert s.aer_restricted == pytest.approx(0.4) and s.predicted_links_restricted == 3


def test_restricted_aer_drops_links_of_unannotated_words() -> None:
    # source word 3 and target word 4 carry no gold link at all (e.g. an English article)
    predicted = [{(0, 0), (3, 1), (1, 4), (1, 1)}, {(0, 0)}]
    sure = [{(0, 0), (1, 1)}, {(0, 1)}]
    possible = [{(0, 0), (1, 1), (2, 2)}, {(0, 1), (0, 0)}]
    s = alignment_scores(predicted, sure, possible)
    # all links: |A|=5, |A∩S|=2, |A∩P|=3 (0-0 of sentence 2 is possible), |S|=3
    assert s.aer == pytest.approx(1 - (2 + 3) / (5 + 3), abs=1e-4)
    assert s.precision == pytest.approx(3 / 5)
    # restricted: (3,1) and (1,4) leave; A' = {(0,0),(1,1)} + {(0,0)}: |A'|=3, ∩S=2, ∩P=3
    assert s.predicted_links_restricted == 3
    assert s.aer_restricted == pytest.approx(1 - (2 + 3) / (3 + 3), abs=1e-4)
    assert s.precision_restricted == pytest.approx(1.0)
    assert s.recall == pytest.approx(2 / 3, abs=1e-4)  # recall: always all sure links


def test_perfect_and_empty_alignments() -> None:
    gold = [{(0, 0), (1, 1)}]
    assert alignment_scores(gold, gold).aer == 0.0
    empty = alignment_scores([set()], gold)
    assert empty.aer == 1.0 and empty.precision == 0.0 and empty.recall == 0.0


def test_sure_links_always_count_as_possible() -> None:
    s = alignment_scores([{(0, 0)}], [{(0, 0)}], [set()])
    assert s.aer == 0.0 and s.precision == 1.0


def test_mismatched_line_counts_raise() -> None:
    with pytest.raises(ValueError, match="2 predicted alignments for 1 sure"):
        alignment_scores([set(), set()], [set()])


def test_pharaoh_files_round_trip_and_errors(tmp_path) -> None:
    assert parse_links("3-1 0-0  2-10") == {(3, 1), (0, 0), (2, 10)}
    assert format_links({(3, 1), (0, 0)}) == "0-0 3-1"
    path = tmp_path / "gold.align"
    path.write_text("0-0 1-1\n\n2-x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gold.align, line 3: '2-x' is not a link 'i-j'"):
        read_alignments(path)


def test_bundled_gold_files_parse_and_line_up() -> None:
    from heedful.data import read_lines

    for split in ("dev", "test"):
        n = len(read_lines(dataset_file("bible-es-en", f"{split}.es")))
        assert n in (998, 1996)
        sure = read_alignments(dataset_file("bible-es-en", f"{split}.align.sure"))
        possible = read_alignments(dataset_file("bible-es-en", f"{split}.align"))
        assert len(sure) == len(possible) == n
        assert all(s <= p for s, p in zip(sure, possible, strict=True))


# ----------------------------------------------------------------------------- words


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    from heedful.decoding.translator import resolve_run_dir

    return Tokenizer.load(resolve_run_dir("bible-es-en"))


@pytest.mark.parametrize("line", [
    "Y llamó Dios á la expansión Cielos: y fué la tarde y la mañana el día segundo.",
    "¿Desenvainaréis vuestras espadas, oh Nabucodonosor?",   # a word split into many pieces
    "Jehová, ¡sálvanos! ☃ «así»",                             # byte-fallback char, quotes
    "sáca-lo  dos",                                           # hyphen; a double space
])
def test_every_piece_belongs_to_one_word_in_order(tokenizer: Tokenizer, line: str) -> None:
    ids, owner = encode_words(tokenizer.src, line)
    ws = line.split(" ")
    assert len(ids) == len(owner)
    assert owner == sorted(owner)  # words in order, pieces of a word contiguous
    for index, word in enumerate(ws):
        pieces = [i for i, o in zip(ids, owner, strict=True) if o == index]
        if word:
            assert pieces, f"word {word!r} has no pieces"
            assert tokenizer.src.decode(pieces) == word  # punctuation/accents stay attached
        else:
            assert not pieces  # the empty word between two spaces
    if "  " not in line:  # word-by-word encoding equals encoding the whole line
        assert ids == tokenizer.src.encode(line)


def test_long_word_splits_into_many_pieces(tokenizer: Tokenizer) -> None:
    _, owner = encode_words(tokenizer.src, "Desenvainaréis")
    assert len(owner) >= 3 and set(owner) == {0}


def test_word_matrix_sums_source_pieces_and_averages_target_pieces() -> None:
    # 3 target pieces (words 0,0,1) x 4 source pieces (words 0,1,1, EOS column ignored)
    attn = np.array([[0.1, 0.2, 0.3, 0.4],
                     [0.3, 0.3, 0.3, 0.1],
                     [0.5, 0.0, 0.5, 0.0],
                     [0.9, 0.0, 0.0, 0.1]])  # the EOS step (row 3) is only used with shift
    m = word_matrix(attn, [0, 1, 1], [0, 0, 1], 2, 2)
    np.testing.assert_allclose(m, [[(0.1 + 0.3) / 2, (0.5 + 0.6) / 2], [0.5, 0.5]])
    shifted = word_matrix(attn, [0, 1, 1], [0, 0, 1], 2, 2, shift=1)
    np.testing.assert_allclose(shifted, [[(0.3 + 0.5) / 2, (0.6 + 0.5) / 2], [0.9, 0.0]])
    with pytest.raises(ValueError, match="too small"):
        word_matrix(attn[:2], [0, 1, 1], [0, 0, 1], 2, 2, shift=1)


def test_extraction_methods() -> None:
    m = np.array([[0.7, 0.2, 0.1],    # target word 0
                  [0.6, 0.3, 0.1],    # target word 1 also looks at source 0
                  [0.05, 0.45, 0.5]])
    assert extract_links(m, "argmax") == {(0, 0), (0, 1), (2, 2)}
    assert extract_links(m, "source-argmax") == {(0, 0), (1, 2), (2, 2)}
    assert extract_links(m, "intersect") == {(0, 0), (2, 2)}
    assert extract_links(m, "threshold", 0.45) == {(0, 0), (0, 1), (1, 2), (2, 2)}
    assert extract_links(np.zeros((0, 3)), "argmax") == set()
    with pytest.raises(ValueError, match="unknown alignment method 'best'"):
        extract_links(m, "best")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_intersect_is_inside_both_directions(t: int, s: int, data) -> None:
    values = data.draw(st.lists(st.floats(0, 1), min_size=t * s, max_size=t * s))
    m = np.asarray(values).reshape(t, s)
    both = extract_links(m, "intersect")
    assert both <= extract_links(m, "argmax") and both <= extract_links(m, "source-argmax")
    assert len(extract_links(m, "argmax")) == t


# ----------------------------------------------------------------------------- forced decoding


@pytest.fixture(scope="module")
def shipped() -> Translator:
    return Translator.from_checkpoint("bible-es-en")


def test_forced_decoding_of_the_greedy_output_reproduces_its_score_and_attention(
        shipped: Translator) -> None:
    src = ["Y dijo Dios: Sea la luz: y fué la luz.", "En el principio crió Dios los cielos."]
    results = shipped.translate(src, beam_size=1, return_attention=True)
    tok = shipped.tokenizer
    tgt_ids = [tok.tgt.encode(r.text) for r in results]
    forced = force_decode(shipped.model, tok.encode_src(src), tgt_ids, need_attention=True)
    for r, f, ids in zip(results, forced, tgt_ids, strict=True):
        assert f.num_tokens == len(ids) + 1
        # greedy's score is the length-normalised sum of the same log-probabilities
        assert f.attention is not None and r.attention is not None
        np.testing.assert_allclose(f.attention, r.attention.float().numpy(), atol=2e-3)
        np.testing.assert_allclose(f.attention.sum(-1), 1.0, atol=1e-4)
        assert f.log_prob < 0 and f.per_token == pytest.approx(f.log_prob / f.num_tokens)


def test_forced_scores_do_not_depend_on_the_batch(shipped: Translator) -> None:
    src = ["Y fué la tarde y la mañana el día primero.", "Jesús lloró.",
           "Y dijo Dios: Produzca la tierra hierba verde."]
    tgt = ["And the evening and the morning were the first day.", "Jesus wept.",
           "And God said, Let the earth bring forth grass."]
    tok = shipped.tokenizer
    together = force_decode(shipped.model, tok.encode_src(src), tok.encode_tgt(tgt))
    alone = [force_decode(shipped.model, tok.encode_src([s]), tok.encode_tgt([t]))[0]
             for s, t in zip(src, tgt, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-3)
    # a real translation scores higher per token than a shuffled one
    wrong = force_decode(shipped.model, tok.encode_src(src[:1]), tok.encode_tgt(tgt[1:2]))[0]
    assert together[0].per_token > wrong.per_token


def test_forced_log_prob_matches_the_training_loss(shipped: Translator) -> None:
    from heedful.data import make_batch
    from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from heedful.training.step import loss_sum

    tok = shipped.tokenizer
    src = tok.encode_src(["Jesús lloró.", "Y fué la luz."])
    tgt = tok.encode_tgt(["Jesus wept.", "And there was light."])
    forced = force_decode(shipped.model, src, tgt)
    batch = make_batch(src, tgt, PAD_ID, BOS_ID, EOS_ID)
    with torch.inference_mode():
        loss = loss_sum(shipped.model.eval(), batch, 0.0)
    assert float(loss) == pytest.approx(-sum(f.log_prob for f in forced), rel=1e-4)
