"""ConvS2S (model.arch: conv) specifics: causality, incremental decoding, padding, gradients,
the encoder's gradient scaling, initial weight scale, config rules, NAG, the run directory.

The decoding protocol's shared properties (step-by-step equals teacher-forced, beam 1 equals
greedy, alone equals padded under beam search, shared beam rows) run on its row in
tests/test_decoding.py; learning the reverse task on its row in tests/test_variants_learn.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from heedful.cli import main
from heedful.config import ConfigError, load_config
from heedful.data import pad
from heedful.decoding.search import beam_search, greedy_search
from heedful.errors import CheckpointError
from heedful.nn.architectures import build_model, model_config
from heedful.nn.conv import ConvSeq2Seq, NormConv, NormLinear
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID

VOCAB = 24


def conv_model(dropout: float = 0.0, **overrides: object) -> ConvSeq2Seq:
    torch.manual_seed(7)
    fields = {"arch": "conv", "embed_dim": 12, "hidden_dim": 16, "encoder_layers": 3,
              "decoder_layers": 3, "dropout": dropout, **overrides}
    model = build_model(model_config(**fields), VOCAB, VOCAB)
    assert isinstance(model, ConvSeq2Seq)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three sources of lengths 8, 3 and 12 (padded) and teacher-forced inputs of length 9."""
    gen = torch.Generator().manual_seed(1)
    seqs = [[*torch.randint(4, VOCAB, (n,), generator=gen).tolist(), EOS_ID] for n in (7, 2, 11)]
    src, src_mask = pad(seqs, PAD_ID)
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID),
                        torch.randint(4, VOCAB, (3, 8), generator=gen)], 1)
    return src, src_mask, tgt_in


def teacher_forced(model: ConvSeq2Seq, src: torch.Tensor, src_mask: torch.Tensor,
                   tgt_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    state = model.init_state(model.encode(src, src_mask))
    logits, attention, _ = model.decode(tgt_in, state, need_weights=True)
    assert attention is not None
    return logits, attention


@pytest.mark.parametrize("kernel_size", [2, 3, 5])
def test_changing_target_token_t_never_changes_outputs_before_t(kernel_size: int) -> None:
    model = conv_model(kernel_size=kernel_size)
    src, src_mask, tgt_in = batch()
    with torch.no_grad():
        logits, attention = teacher_forced(model, src, src_mask, tgt_in)
        for t in range(1, tgt_in.size(1)):
            changed = tgt_in.clone()
            changed[:, t] = (changed[:, t] - 4 + 1) % (VOCAB - 4) + 4
            new_logits, new_attention = teacher_forced(model, src, src_mask, changed)
            assert torch.equal(new_logits[:, :t], logits[:, :t])
            assert torch.equal(new_attention[:, :t], attention[:, :t])
            assert not torch.allclose(new_logits[:, t], logits[:, t])  # the input reaches t


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_step_by_step_equals_teacher_forced_with_attention(kernel_size: int) -> None:
    model = conv_model(kernel_size=kernel_size, decoder_layers=4)
    src, src_mask, tgt_in = batch()
    with torch.no_grad():
        logits, attention = teacher_forced(model, src, src_mask, tgt_in)
        assert attention.shape == (3, 9, 4, 1, src.size(1))  # (B, T, L, H, S)
        state = model.init_state(model.encode(src, src_mask))
        for t in range(tgt_in.size(1)):
            logp, state, step_attention = model.step(tgt_in[:, t], state, need_weights=True)
            torch.testing.assert_close(logp, torch.log_softmax(logits[:, t], -1),
                                       atol=1e-5, rtol=1e-5)
            assert step_attention is not None
            torch.testing.assert_close(step_attention, attention[:, t], atol=1e-6, rtol=1e-5)
            assert state.buffers[0].shape == (3, kernel_size - 1, 16)
        # two tokens at a time continue the same computation
        state = model.init_state(model.encode(src, src_mask))
        first, _, state = model.decode(tgt_in[:, :4], state)
        rest, _, state = model.decode(tgt_in[:, 4:], state)
        torch.testing.assert_close(torch.cat([first, rest], 1), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [2, 3, 4])
def test_a_sentence_alone_equals_it_padded_in_a_batch(kernel_size: int) -> None:
    model = conv_model(kernel_size=kernel_size)
    src, src_mask, tgt_in = batch()
    with torch.no_grad():
        logits, attention = teacher_forced(model, src, src_mask, tgt_in)
        enc = model.encode(src, src_mask)
        for i in range(3):
            n = int(src_mask[i].sum())
            one, one_mask = src[i : i + 1, :n], src_mask[i : i + 1, :n]
            alone = model.encode(one, one_mask)
            torch.testing.assert_close(alone.keys[0], enc.keys[i, :n], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(alone.values[0], enc.values[i, :n], atol=1e-6, rtol=1e-5)
            one_logits, one_attention = teacher_forced(model, one, one_mask, tgt_in[i : i + 1])
            torch.testing.assert_close(one_logits[0], logits[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one_attention[0], attention[i, ..., :n],
                                       atol=1e-6, rtol=1e-5)
            assert not attention[i, ..., n:].any()  # padding gets no weight


def test_beam_of_one_equals_greedy_and_attention_has_every_layer() -> None:
    model = conv_model()
    with torch.no_grad():  # a peaked output layer: outputs of different lengths
        model.output.weight.mul_(6.0)
    src, src_mask, _ = batch()
    caps = torch.full((3,), 10)
    greedy = greedy_search(model, src, src_mask, caps, return_attention=True)
    beam = beam_search(model, src, src_mask, caps, beam_size=1, alpha=0.0,
                       return_attention=True)
    for i, (g, b) in enumerate(zip(greedy, beam, strict=True)):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-4)
        assert g[0].attention is not None and b[0].attention is not None
        n = int(src_mask[i].sum())
        assert g[0].attention.shape == (len(g[0].tokens), 3, 1, n)  # (T_out, L, H, S)
        torch.testing.assert_close(g[0].attention, b[0].attention, atol=1e-5, rtol=1e-4)


def test_output_features_feed_the_fused_output_layer_and_loss(monkeypatch) -> None:
    """``output_features`` is the teacher-forced pass before the output layer, so the trainer's
    fused output layer + loss gives the loss and gradients of the unfused path."""
    from heedful.data import make_batch
    from heedful.training import step

    model = conv_model(share_embeddings=True, tie_output=True, embed_dim=16)
    src, src_mask, tgt_in = batch()
    features, output = model.output_features(src, src_mask, tgt_in)
    torch.testing.assert_close(output(features), model(src, src_mask, tgt_in))
    gen = torch.Generator().manual_seed(2)
    data = make_batch([[*torch.randint(4, VOCAB, (n,), generator=gen).tolist(), EOS_ID]
                       for n in (5, 9)],
                      [torch.randint(4, VOCAB, (n,), generator=gen).tolist() for n in (7, 3)],
                      PAD_ID, BOS_ID, EOS_ID)
    results = []
    for fused in (False, True):
        monkeypatch.setattr(step, "_fuses_output_layer", lambda m, fused=fused: fused)
        model.zero_grad()
        loss = step.loss_sum(model, data, 0.1)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0])
    for fused_grad, plain_grad in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(fused_grad, plain_grad, atol=1e-6, rtol=1e-4)


def _loss(model: ConvSeq2Seq) -> torch.Tensor:
    src, src_mask, tgt_in = batch()
    return model(src, src_mask, tgt_in).log_softmax(-1)[..., 5].sum()


def test_gradients_reach_every_parameter() -> None:
    model = conv_model(dropout=0.1, share_embeddings=True, tie_output=True,
                       embed_dim=16).train()
    _loss(model).backward()
    names = [name for name, _ in model.named_parameters()]
    assert any("weight_g" in n for n in names) and any("weight_v" in n for n in names)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _grads(model: ConvSeq2Seq) -> dict[str, torch.Tensor]:
    model.zero_grad()
    _loss(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_encoder_gradient_is_scaled_by_one_over_twice_the_attention_layers() -> None:
    model = conv_model(decoder_layers=3).double()  # float64: the ratio exact to rounding
    assert model.encoder.grad_scale == pytest.approx(1 / 6)
    scaled = _grads(model)
    model.encoder.grad_scale = 1.0
    plain = _grads(model)
    for name, grad in scaled.items():
        if name.startswith("encoder."):  # the convolutional stack: exactly 1/6 of it
            torch.testing.assert_close(grad, plain[name] / 6, atol=1e-15, rtol=1e-10)
        elif name.startswith(("decoder.", "fc_", "output.", "tgt_")):
            torch.testing.assert_close(grad, plain[name], atol=1e-15, rtol=1e-10)
    # the source embedding also reaches the values directly: not all of its gradient scales
    ratio = scaled["src_embed.weight"].norm() / plain["src_embed.weight"].norm()
    assert 1 / 6 + 0.01 < ratio < 1.0
    with torch.no_grad():  # the forward pass does not change
        src, src_mask, tgt_in = batch()
        before = model(src, src_mask, tgt_in)
        model.encoder.grad_scale = 1 / 6
        torch.testing.assert_close(model(src, src_mask, tgt_in), before, atol=0, rtol=0)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_initial_weights_have_the_papers_scale(dropout: float) -> None:
    """Rows of norm sqrt(1 - p) into a linear map after dropout, 2 sqrt(1 - p) into a GLU and
    1 elsewhere (Gehring et al. §3.4; weight normalisation keeps the gain separate)."""
    model = conv_model(dropout=dropout)
    keep = math.sqrt(1 - dropout)
    expected = {"encoder.fc_in": keep, "fc_in": keep, "encoder.fc_out": 1.0, "fc_out": 1.0}
    for name, module in model.named_modules():
        if isinstance(module, NormConv):
            want = 2 * keep
        elif isinstance(module, NormLinear):
            want = expected.get(name, 1.0)
        else:
            continue
        norms = module.weight().norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, want), msg=name)
        assert module.bias.abs().max() == 0


@pytest.mark.parametrize("overrides, message", [
    (["model.arch=conv", "model.attention=scaled_dot"],
     "model.arch: conv needs model.attention: dot"),
    (["model.arch=conv", "model.copy_attention=true"], "is implemented for model.arch: rnn"),
    (["model.kernel_size=3"], "model.kernel_size applies only to model.arch: conv"),
    (["model.arch=conv", "model.kernel_size=0"], "model.kernel_size"),
    (["train.optimizer=nag", "train.betas=[0.9, 0.98]"],
     "train.betas applies only to train.optimizer: adam"),
    (["train.momentum=0.9"], "train.momentum applies only to train.optimizer: nag"),
    (["train.optimizer=sgd"], "train.optimizer"),
])
def test_config_rules(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_conv_small_preset_shape() -> None:
    from heedful.nn.architectures import count_parameters
    from heedful.presets import get_preset

    cfg = get_preset("conv-small")
    model = build_model(cfg.model, 4000, 4000)
    assert isinstance(model, ConvSeq2Seq)
    assert len(model.encoder.convs) == 4 and len(model.decoder) == 3
    assert model.encoder.convs[0].weight().shape == (512, 256 * 3)  # GLU: 2 x 256 channels
    assert count_parameters(model) == 4_972_448
    assert cfg.model.attention_layers() == 3  # the server's "layers"
    assert cfg.model.max_source_positions() == 1024


TINY_CONV = ["data.dataset=null", "tokenizer.vocab_size=500", "model.arch=conv",
             "model.embed_dim=32", "model.hidden_dim=32", "model.encoder_layers=2",
             "model.decoder_layers=2", "model.dropout=0.1", "train.batch_tokens=800",
             "train.valid_every=4", "train.log_every=2", "train.seed=5", "decode.beam_size=2",
             "data.dev_limit=20", "train.optimizer=nag", "train.lr=0.25", "train.clip_norm=0.1"]


def _data(src: Path, tgt: Path) -> list[str]:
    return [f"data.{split}.{side}={path}" for split in ("train", "dev", "test")
            for side, path in (("src", src), ("tgt", tgt))]


def test_run_directory_saves_resumes_exactly_and_loads(tmp_path: Path, sample_files,
                                                       capsys) -> None:
    from heedful.decoding.translator import Translator
    from heedful.serving.ctranslate2 import export_ctranslate2

    args = [*_data(*sample_files), *TINY_CONV]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *args, "train.max_steps=8", "--run-dir", str(full),
                 "--no-progress"]) == 0
    assert main(["train", *args, "train.max_steps=4", "--run-dir", str(part),
                 "--no-progress"]) == 0
    assert main(["train", "train.max_steps=8", "--resume", "--run-dir", str(part),
                 "--no-progress"]) == 0
    a = load_file(str(full / "checkpoints" / "step-00000008" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-00000008" / "model.safetensors"))
    assert any(k.endswith("weight_g") for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    opt = load_file(str(part / "checkpoints" / "step-00000008" / "optimizer.safetensors"))
    assert any(k.endswith("momentum_buffer") for k in opt)  # NAG's state was saved

    translator = Translator.from_checkpoint(part)
    assert isinstance(translator.model, ConvSeq2Seq)
    out = translator.translate(["Y dijo Dios: Sea la luz."], beam_size=2,
                               return_attention=True)[0]
    assert out.attention is not None and out.attention.shape[1:3] == (2, 1)
    png = tmp_path / "grid.png"
    assert main(["attention", str(part), "Y dijo Dios.", "--grid", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    assert main(["export", str(part), str(tmp_path / "ct2"), "--format", "ctranslate2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"heedful: error: {part} is a convolutional (ConvS2S) model (model.arch: "
                   "conv); CTranslate2 runs Transformer encoder-decoders only, so only "
                   "Transformer runs can be exported to it")
    with pytest.raises(CheckpointError, match="CTranslate2 runs Transformer"):
        export_ctranslate2(part, tmp_path / "ct2b")
