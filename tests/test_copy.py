"""The pointer-generator copy mechanism and coverage scheduling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heedful.config import ConfigError, load_config
from heedful.decoding.translator import Translator
from heedful.nn.pointer_generator import PointerGenerator, extend_source
from heedful.training.trainer import train


def test_extend_source_gives_each_missing_source_id_one_extra_id() -> None:
    mapping = torch.tensor([0, 1, 2, 3, 4, -1, 6, -1])  # source ids 5 and 7: not in the target
    src = torch.tensor([[4, 5, 7, 3], [7, 6, 3, 0]])
    ids, oov = extend_source(src, mapping, tgt_vocab_size=10)
    assert oov.tolist() == [5, 7]
    assert ids.tolist() == [[4, 10, 11, 3], [11, 6, 3, 0]]


def test_final_distribution_sums_to_one_and_can_put_its_mass_on_an_oov_source_token() -> None:
    torch.manual_seed(0)
    b, t, s, v, e, h, extra = 2, 3, 4, 12, 5, 6, 2
    gen = PointerGenerator(h, e)
    logits = torch.randn(b, t, v)
    attention = torch.softmax(torch.randn(b, t, s), -1)
    copy_ids = torch.tensor([[4, 12, 13, 3], [13, 6, 3, 3]])  # 12, 13 = extra (OOV) ids
    log_probs = gen(logits, torch.randn(b, t, h), torch.randn(b, t, e), attention, copy_ids,
                    extra)
    assert log_probs.shape == (b, t, v + extra)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(b, t))
    # the extra ids get exactly the copy mass of their source positions
    p_gen = torch.sigmoid(gen.switch(torch.zeros(1, h + e)))  # sanity: a proper switch
    assert 0 < float(p_gen.detach()) < 1
    # switch fully to copying, attention on the OOV source token: it is the argmax
    with torch.no_grad():
        gen.switch.weight.zero_()
        gen.switch.bias.fill_(-50.0)
    one_hot = torch.zeros(b, t, s)
    one_hot[0, :, 1] = 1.0  # source position 1 of sentence 0 = extra id 12
    one_hot[1, :, 0] = 1.0  # source position 0 of sentence 1 = extra id 13
    log_probs = gen(logits, torch.randn(b, t, h), torch.randn(b, t, e), one_hot, copy_ids, extra)
    assert log_probs.argmax(-1).tolist() == [[12] * t, [13] * t]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(b, t))


def tiny(sample_files, *extra: str):
    src, tgt = sample_files
    return load_config(None, [
        "data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
        f"data.dev.src={src}", f"data.dev.tgt={tgt}", "data.dev_limit=10",
        "tokenizer.vocab_size=400", "model.embed_dim=16", "model.hidden_dim=16",
        "train.batch_tokens=800", "model.copy_attention=true", *extra])


def test_copy_model_emits_a_source_piece_the_target_vocabulary_lacks(tmp_path: Path,
                                                                     sample_files) -> None:
    """End to end: separate vocabularies, a model switched to pure copying with uniform
    attention -> the output text repeats the source's most frequent piece, a Spanish word
    the English vocabulary does not have."""
    train(tiny(sample_files, "tokenizer.joint=false", "train.max_steps=2",
               "train.valid_every=2"), tmp_path / "run", progress=False)
    translator = Translator.from_checkpoint(tmp_path / "run")
    model, tok = translator.model, translator.tokenizer
    mapping = model.get_buffer("src_to_tgt")
    assert (mapping < 0).any()  # restored from the checkpoint, not the identity
    with torch.no_grad():
        model.copy.switch.weight.zero_()  # type: ignore[union-attr]
        model.copy.switch.bias.fill_(-50.0)  # type: ignore[union-attr]
        model.decoder.memory_proj.weight.zero_()  # type: ignore[union-attr]  # uniform attention
    words = " ".join(sample_files[0].read_text(encoding="utf-8").split()[:2000]).split()
    oov_word = next(w for w in words
                    if len(ids := tok.encode_src([w])[0]) == 2 and int(mapping[ids[0]]) < 0)
    [out] = translator.translate([f"{oov_word} {oov_word} {oov_word} y"], beam_size=1)
    piece = tok.src.id_to_piece(tok.encode_src([oov_word])[0][0])
    assert tok.tgt.piece_to_id(piece) == 1  # <unk>: not in the target vocabulary
    assert out.tgt_pieces[0] == piece
    assert out.text.split()[0] == oov_word


def test_copy_and_coverage_train_translate_and_reload(tmp_path: Path, sample_files) -> None:
    cfg = tiny(sample_files, "model.attention=coverage", "model.coverage_loss_weight=1",
               "model.coverage_loss_from_step=2", "train.max_steps=4", "train.valid_every=4")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.steps == 4
    translator = Translator.from_checkpoint(tmp_path / "run")
    first = translator.translate(["Y dijo Dios."], beam_size=3)[0]
    again = Translator.from_checkpoint(tmp_path / "run").translate(["Y dijo Dios."],
                                                                    beam_size=3)[0]
    assert first.text == again.text and first.score == pytest.approx(again.score)


@pytest.mark.parametrize("extra, message", [
    (["model.arch=transformer", "model.attention=multihead", "model.attention_heads=2",
      "model.ff_dim=32", "model.input_feeding=false"], "implemented for model.arch: rnn"),
    (["model.attention=none", "model.input_feeding=false"], "model.copy_attention needs attention"),
])
def test_copy_config_errors(sample_files, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(sample_files, *extra)


def test_coverage_start_needs_coverage(sample_files) -> None:
    with pytest.raises(ConfigError, match="coverage_loss_from_step applies only"):
        tiny(sample_files, "model.coverage_loss_from_step=10")
