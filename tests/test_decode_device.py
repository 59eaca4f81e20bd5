"""Decoding on a chosen device and precision, checked on the CPU: the --device/--precision
errors, bf16 autocast, the sampler's generator, the one host read per search step, and the
preallocated Transformer KV cache (on a GPU by default, forced on here)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from heedful.cli import main
from heedful.data import pad
from heedful.decoding import search
from heedful.decoding.sampling import make_generator
from heedful.decoding.search import beam_search, greedy_search
from heedful.decoding.translator import Translator
from heedful.nn.architectures import build_model, model_config
from heedful.runtime.precision import cpu_has_native_bf16
from heedful.tokenizer import EOS_ID, PAD_ID

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
LINES = ["Y dijo Dios: Sea la luz.", "En el principio creó Dios los cielos y la tierra."]


# --------------------------------------------------------------------------- the flags


@no_cuda
@pytest.mark.parametrize("argv", [
    ["translate", "bible-es-en"], ["score", "bible-es-en", "--src", "a", "--tgt", "b"],
    ["attention", "bible-es-en", "hola"], ["chat", "bible-es-en"],
    ["evaluate", "bible-es-en"], ["compare", "bible-es-en"],
    ["align", "bible-es-en", "--src", "a", "--tgt", "b"],
    ["bench", "--only", "rnn", "--skip-training"],
])
def test_a_missing_gpu_is_one_line_on_every_command(argv: list[str], capsys) -> None:
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("heedful: error: --device: cuda asked for, but this machine has no "
                          "CUDA GPU") and "\n" not in err
    assert main([*argv, "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("heedful: error: --device: 'gpu' is not a device; use auto, cpu, cuda or "
                   "cuda:N")


@no_cuda
def test_serve_checks_the_device_before_loading(capsys) -> None:
    pytest.importorskip("uvicorn")
    assert main(["serve", "bible-es-en", "--device", "cuda:1"]) == 2
    assert "cuda:1 asked for, but this machine has no CUDA GPU" in capsys.readouterr().err


@no_cuda
def test_fp16_decoding_needs_a_gpu(capsys) -> None:
    assert main(["translate", "bible-es-en", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("heedful: error: --precision: fp16 runs on a CUDA GPU only, not on "
                          "cpu") and "\n" not in err
    assert main(["bench", "--only", "rnn", "--precision", "fp16", "--device", "cpu"]) == 2
    assert "fp16 runs on a CUDA GPU only" in capsys.readouterr().err


def _linear_output_dtypes(translator: Translator, lines: list[str], **options: Any
                          ) -> tuple[list[str], set[torch.dtype]]:
    """The translations, and the dtypes the model's linear layers produced meanwhile."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in translator.model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        texts = [r.text for r in translator.translate(lines, **options)]
    finally:
        for h in hooks:
            h.remove()
    return texts, seen


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(
        not cpu_has_native_bf16(), reason="this CPU has no native bf16 (heedful refuses it)"))])
def test_decoding_precision_on_the_cpu(precision: str) -> None:
    fp32 = Translator.from_checkpoint("bible-es-en", device="cpu")
    base, base_dtypes = _linear_output_dtypes(fp32, LINES, beam_size=2)
    translator = Translator.from_checkpoint("bible-es-en", device="cpu", precision=precision)
    texts, dtypes = _linear_output_dtypes(translator, LINES, beam_size=2)
    assert base_dtypes == {torch.float32}
    if precision == "fp32":
        assert dtypes == {torch.float32} and texts == base
    else:  # the products ran in bf16; a trained model still says about the same
        assert torch.bfloat16 in dtypes
        from heedful.analysis.metrics import score_corpus

        assert all(texts) and score_corpus(texts, base).chrf > 50


# --------------------------------------------------------------------------- sampling


def test_the_sampler_generator_is_on_the_model_device() -> None:
    model = build_model(model_config(embed_dim=8, hidden_dim=8), 20, 20)
    device = next(model.parameters()).device
    generator = make_generator(5, device)
    assert generator.device == device
    assert torch.equal(torch.rand(4, generator=generator, device=device),
                       torch.rand(4, generator=make_generator(5, device), device=device))


def test_seeded_sampling_gives_the_same_output_twice() -> None:
    translator = Translator.from_checkpoint("bible-es-en", device="cpu")
    options = {"sample": True, "seed": 11, "top_k": 20, "beam_size": 1, "max_len_b": 8}
    first = [r.text for r in translator.translate(LINES * 2, **options)]
    assert first == [r.text for r in translator.translate(LINES * 2, **options)]
    assert all(first)


# --------------------------------------------------------------------------- host reads


@dataclass
class _TableState:
    bias: torch.Tensor  # (R, V)

    def select(self, index: torch.Tensor) -> _TableState:
        return _TableState(self.bias.index_select(0, index))


class _TableModel:
    """The decoding protocol from two random tables, in tensor operations only (no host
    reads of its own): log p(next | prev, source) = log_softmax(T[prev] + U[first source
    token]). Beams diverge and sentences end at different steps."""

    def __init__(self, vocab: int = 12) -> None:
        gen = torch.Generator().manual_seed(2)
        self.next = torch.randn(vocab, vocab, generator=gen) * 2
        self.next[:, EOS_ID] -= 1.5
        self.source = torch.randn(vocab, vocab, generator=gen)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return src[:, 0]

    def init_state(self, first: torch.Tensor) -> _TableState:
        return _TableState(self.source.index_select(0, first))

    def step(self, prev: torch.Tensor, state: _TableState, need_weights: bool = False
             ) -> tuple[torch.Tensor, _TableState, None]:
        logits = self.next.index_select(0, prev) + state.bias
        return torch.log_softmax(logits, -1), state, None


class _ScalarReads(TorchDispatchMode):
    """Counts the operators that read a tensor's value back to the host (``.item()``,
    ``int()``, ``float()``, ``bool()`` of a tensor, and ``nonzero``)."""

    READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        name = str(func.overloadpacket)
        if name in self.READS and not self.paused:
            self.reads[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("search_name", ["greedy", "beam", "beam-certain-nbest"])
def test_one_host_transfer_per_search_step(search_name: str, monkeypatch) -> None:
    """Each step reads the device once (``host_values``) and never a scalar on its own."""
    model = _TableModel()
    src = torch.tensor([[4, 5, EOS_ID], [7, EOS_ID, PAD_ID], [9, 3, EOS_ID], [11, 6, EOS_ID]])
    caps = torch.tensor([9, 4, 12, 7])
    copies, steps = [], []
    real_copy, real_step = search.host_values, model.step
    monkeypatch.setattr(search, "host_values",
                        lambda *t: copies.append(len(t)) or real_copy(*t))
    monkeypatch.setattr(model, "step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    counter = _ScalarReads()
    real_hypothesis = search._hypothesis

    def hypothesis(*args: Any) -> Any:
        """A finished beam's total is summed from the host's copy of its log-probs (a CPU
        tensor made there, not a read of the device): not counted."""
        counter.paused = True
        try:
            return real_hypothesis(*args)
        finally:
            counter.paused = False

    monkeypatch.setattr(search, "_hypothesis", hypothesis)
    with counter:
        if search_name == "greedy":
            hyps = greedy_search(model, src, src != PAD_ID, caps)  # type: ignore[arg-type]
        else:
            hyps = beam_search(model, src, src != PAD_ID, caps, 3,  # type: ignore[arg-type]
                               n_best=2 if search_name.endswith("nbest") else 1,
                               stop="certain" if "certain" in search_name else "top_finished")
    assert counter.reads == Counter()
    assert len(copies) == len(steps) > 3
    lengths = {len(h[0].tokens) for h in hyps}
    assert len(lengths) > 1  # sentences ended at different steps: rows left the batch


# --------------------------------------------------------------------------- KV cache


def _transformer(kv_cache: str) -> torch.nn.Module:
    torch.manual_seed(3)
    cfg = model_config(arch="transformer", attention="multihead", attention_heads=2, ff_dim=32,
                       input_feeding=False, embed_dim=16, hidden_dim=16, encoder_layers=2,
                       decoder_layers=2, dropout=0.0)
    model = build_model(cfg, 20, 20).eval()
    with torch.no_grad():  # a peaked output layer: beams diverge and end at different steps
        model.output.weight.mul_(8.0)
    model.kv_cache = kv_cache
    return model


@pytest.mark.parametrize("need_weights", [False, True])
def test_preallocated_kv_cache_equals_the_cat_cache(need_weights: bool, monkeypatch) -> None:
    from heedful.nn import transformer

    monkeypatch.setattr(transformer, "KV_CAPACITY", 3)  # outputs of up to 14: it doubles twice
    grow, pre = _transformer("grow"), _transformer("preallocated")
    torch.manual_seed(4)
    src = torch.randint(4, 20, (5, 9))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[1, 6:] = False
    src_mask[3, 4:] = False
    src = src.masked_fill(~src_mask, PAD_ID)
    max_len = torch.tensor([14, 7, 12, 5, 9])
    state = pre.init_state(pre.encode(src, src_mask))
    with torch.no_grad():
        _, state, _ = pre.step(torch.full((5,), 1), state)
    assert all(isinstance(c, transformer.KVCache) for c in state.cache)
    for k in (1, 4):
        a = beam_search(grow, src, src_mask, max_len, k, n_best=min(k, 2),
                        return_attention=need_weights)
        b = beam_search(pre, src, src_mask, max_len, k, n_best=min(k, 2),
                        return_attention=need_weights)
        for a_sent, b_sent in zip(a, b, strict=True):
            for x, y in zip(a_sent, b_sent, strict=True):
                assert x.tokens == y.tokens
                assert x.score == pytest.approx(y.score, abs=1e-5)
                if need_weights:
                    assert x.attention is not None and y.attention is not None
                    torch.testing.assert_close(x.attention, y.attention, atol=1e-6, rtol=1e-5)
    greedy_a = greedy_search(grow, src, src_mask, max_len)
    greedy_b = greedy_search(pre, src, src_mask, max_len)
    assert [h[0].tokens for h in greedy_a] == [h[0].tokens for h in greedy_b]


def test_preallocated_kv_cache_steps_equal_the_teacher_forced_pass() -> None:
    model = _transformer("preallocated")
    src, src_mask = pad([[5, 6, 7, 8, EOS_ID], [9, 4, EOS_ID]], PAD_ID)
    tgt_in = torch.tensor([[1, 5, 6, 7, 8, 9, 4], [1, 9, 9, 4, 4, 5, 6]])
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_mask, tgt_in), -1)
        state = model.init_state(model.encode(src, src_mask))
        for t in range(tgt_in.size(1)):
            if t == 3:  # a reorder mid-way (rows swapped, then back) keeps the cache exact
                state = state.select(torch.tensor([1, 0])).select(torch.tensor([1, 0]))
            logp, state, _ = model.step(tgt_in[:, t], state)
            torch.testing.assert_close(logp, full[:, t], atol=1e-5, rtol=1e-5)
