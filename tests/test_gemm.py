"""heedful.runtime.gemm: float32 linear layers on oneDNN give F.linear's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heedful.runtime import gemm
from heedful.runtime.gemm import MIN_OUT_FEATURES, MIN_ROWS, Linear, as_plain_linear, linear

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="PyTorch built without oneDNN")


@pytest.fixture
def backend(monkeypatch):
    """Force a backend for one test; the process-wide choice is restored afterwards."""
    def force(name: str) -> None:
        monkeypatch.setenv(gemm.GEMM_VARIABLE, name)
        gemm.reset_cpu_gemm_backend()
    yield force
    monkeypatch.delenv(gemm.GEMM_VARIABLE, raising=False)
    gemm.reset_cpu_gemm_backend()


@pytest.fixture
def calls(monkeypatch):
    """Counts of the two oneDNN paths taken."""
    seen = {"training": 0, "inference": 0}
    training, inference = gemm._training_linear, gemm._inference_linear

    def count_training(*args):
        seen["training"] += 1
        return training(*args)

    def count_inference(*args):
        seen["inference"] += 1
        return inference(*args)
    monkeypatch.setattr(gemm, "_training_linear", count_training)
    monkeypatch.setattr(gemm, "_inference_linear", count_inference)
    return seen


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # float32 products summed in another order: relative differences ~1e-6
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@needs_onednn
@pytest.mark.parametrize("shape,out_dim,bias", [((300, 64), 96, True), ((4, 70, 48), 200, False),
                                                ((MIN_ROWS, 32), MIN_OUT_FEATURES, True)])
def test_training_path_matches_f_linear_in_value_and_gradient(backend, calls, shape, out_dim,
                                                              bias) -> None:
    backend("onednn")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, requires_grad=True)
    w = torch.randn(out_dim, shape[-1], generator=gen, requires_grad=True)
    b = torch.randn(out_dim, generator=gen, requires_grad=True) if bias else None
    grad = torch.randn(*shape[:-1], out_dim, generator=gen)

    def value_and_grads(fn):
        for t in (x, w, b):
            if t is not None:
                t.grad = None
        y = fn(x, w, b)
        y.backward(grad)
        return y.detach(), x.grad, w.grad, None if b is None else b.grad

    ours, ref = value_and_grads(linear), value_and_grads(F.linear)
    assert calls["training"] == 1 and ours[0].shape == ref[0].shape
    assert ours[0].is_contiguous()
    for a, r in zip(ours, ref, strict=True):
        if r is not None:
            _close(a, r)


@needs_onednn
def test_inference_path_matches_f_linear(backend, calls) -> None:
    backend("onednn")
    layer = Linear(64, 512)
    x = torch.randn(3, 100, 64)
    with torch.inference_mode():
        ours = layer(x)
    _close(ours, F.linear(x, layer.weight.detach(), layer.bias.detach()))
    assert calls == {"training": 0, "inference": 1}
    with torch.no_grad():  # parameters that want gradients, but no graph is recorded
        layer(x)
    assert calls["inference"] == 2


@needs_onednn
@pytest.mark.parametrize("rows,out_dim", [(MIN_ROWS - 1, 64), (MIN_ROWS * 4, MIN_OUT_FEATURES - 1)])
def test_small_products_stay_on_f_linear(backend, calls, rows, out_dim) -> None:
    backend("onednn")
    x, w = torch.randn(rows, 32, requires_grad=True), torch.randn(out_dim, 32)
    assert torch.equal(linear(x, w), F.linear(x, w))
    assert calls == {"training": 0, "inference": 0}


@needs_onednn
def test_bf16_autocast_and_other_dtypes_stay_on_f_linear(backend, calls) -> None:
    backend("onednn")
    x, w = torch.randn(256, 32), torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16
    assert linear(x.double(), w.double()).dtype == torch.float64
    assert calls == {"training": 0, "inference": 0}


@pytest.mark.parametrize("shape", [(300, 48), (3, 190, 48), (512, 48), (40, 48)])
def test_autocast_rows_are_bucketed_with_the_same_values_and_gradients(shape, monkeypatch
                                                                       ) -> None:
    """Under CPU autocast the rows are padded to a multiple of ROW_BUCKET (the product sees
    the bucketed count), and values and gradients equal the unpadded F.linear's."""
    seen_rows = []
    real_linear = F.linear

    def spy(x, w, b=None):
        seen_rows.append(x.reshape(-1, x.size(-1)).size(0))
        return real_linear(x, w, b)
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(80, 48, requires_grad=True)
    b = torch.randn(80, requires_grad=True)
    grad_out = torch.randn(*shape[:-1], 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.linear(x, w, b)
    expected_grads = torch.autograd.grad(expected, (x, w, b), grad_out.bfloat16())
    monkeypatch.setattr(gemm.F, "linear", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear(x, w, b)
    got_grads = torch.autograd.grad(got, (x, w, b), grad_out.bfloat16())
    rows = x.numel() // 48
    assert seen_rows == [rows if rows < gemm.ROW_BUCKET or rows % gemm.ROW_BUCKET == 0
                         else -(-rows // gemm.ROW_BUCKET) * gemm.ROW_BUCKET]
    assert got.shape == expected.shape and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2 * float(e.abs().max()))


def test_mkl_setting_keeps_f_linear(backend, calls) -> None:
    backend("mkl")
    x, w = torch.randn(512, 32, requires_grad=True), torch.randn(64, 32)
    assert torch.equal(linear(x, w), F.linear(x, w))
    assert gemm.cpu_gemm_backend() == "mkl"
    assert calls == {"training": 0, "inference": 0}


def test_an_unknown_setting_is_an_error_that_names_the_variable(backend) -> None:
    backend("openblas")
    with pytest.raises(ValueError, match=r"HEEDFUL_CPU_GEMM='openblas': choose one of "
                                         r"auto, onednn, mkl"):
        gemm.cpu_gemm_backend()


def test_auto_measures_once_and_keeps_its_choice(backend, monkeypatch) -> None:
    backend("auto")
    measured = []

    def fake_speedup() -> float:
        measured.append(1)
        return 2.0
    monkeypatch.setattr(gemm, "measure_speedup", fake_speedup)
    expected = "onednn" if torch.backends.mkldnn.is_available() else "mkl"
    assert gemm.cpu_gemm_backend() == expected
    assert gemm.cpu_gemm_backend() == expected
    assert len(measured) == (1 if expected == "onednn" else 0)
    gemm.reset_cpu_gemm_backend()
    monkeypatch.setattr(gemm, "measure_speedup", lambda: gemm.AUTO_MARGIN - 0.01)
    assert gemm.cpu_gemm_backend() == "mkl"  # not clearly faster: MKL stays


@needs_onednn
def test_measured_speedup_is_a_positive_ratio() -> None:
    assert gemm.measure_speedup(rows=256, dim=32, out_dim=64, repeats=2) > 0


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
def test_linear_is_an_nn_linear_with_the_same_state_dict_and_quantizes() -> None:
    layer = Linear(8, 4)
    assert isinstance(layer, nn.Linear)
    plain = nn.Linear(8, 4)
    plain.load_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == list(plain.state_dict())
    model = nn.Sequential(Linear(8, 4), nn.ReLU(), Linear(4, 2))
    quantized = torch.ao.quantization.quantize_dynamic(as_plain_linear(model), {nn.Linear},
                                                       dtype=torch.qint8)
    assert repr(quantized).count("DynamicQuantizedLinear") == 2


@needs_onednn
def test_a_transformer_update_matches_mkl(backend) -> None:
    """A whole forward/backward of the Transformer: oneDNN and MKL agree to float32 rounding."""
    from heedful.nn.transformer import TransformerSeq2Seq

    torch.manual_seed(0)
    model = TransformerSeq2Seq(src_vocab=50, tgt_vocab=50, dim=32, num_heads=4, ff_dim=64,
                               encoder_layers=2, decoder_layers=2, dropout=0.0, pre_norm=True,
                               learned_positions=False, max_positions=64,
                               share_embeddings=True, tie_output=True, pad_id=0)
    src = torch.randint(3, 50, (16, 12))
    tgt = torch.randint(3, 50, (16, 10))
    mask = torch.ones_like(src, dtype=torch.bool)
    results = []
    for name in ("mkl", "onednn"):
        backend(name)
        model.zero_grad()
        logits = model(src, mask, tgt)
        logits.square().mean().backward()
        results.append((logits.detach(), model.output.weight.grad.clone()))
    _close(results[1][0], results[0][0])
    _close(results[1][1], results[0][1])


def test_the_console_script_rejects_a_bad_setting_before_any_work(monkeypatch, capsys) -> None:
    from heedful.cli import main

    monkeypatch.setenv(gemm.GEMM_VARIABLE, "fast")
    assert main(["presets"]) == 2
    assert "heedful: error: HEEDFUL_CPU_GEMM='fast': choose one of auto, onednn, mkl" in (
        capsys.readouterr().err)
