"""Decoding on a CUDA GPU: the same outputs as the CPU, GPU-saved checkpoints on the CPU, and
``heedful translate`` / ``heedful bench`` with ``--device cuda``. Every test needs a GPU
(``cuda`` marker); without one they are collected and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heedful.cli import main
from heedful.decoding.translator import Translator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY_TRANSFORMER = [
    "tokenizer.vocab_size=500", "model.arch=transformer", "model.attention=multihead",
    "model.attention_heads=4", "model.input_feeding=false", "model.embed_dim=64",
    "model.hidden_dim=64", "model.ff_dim=128", "model.encoder_layers=2",
    "model.decoder_layers=2", "train.batch_tokens=800", "train.valid_every=1000",
    "train.seed=5",
]


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 products in full fp32 while these tests run (training may have allowed TF32,
    whose 10-bit mantissa would make the GPU's scores differ from the CPU's)."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def _data(sample_files: tuple[Path, Path]) -> list[str]:
    src, tgt = sample_files
    return ["data.dataset=null"] + [f"data.{split}.{side}={path}"
                                    for split in ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory, sample_files) -> Path:
    """A tiny Transformer trained 40 steps on the GPU (its checkpoint saved from there)."""
    run = tmp_path_factory.mktemp("cuda") / "run"
    assert main(["train", *_data(sample_files), *TINY_TRANSFORMER, "train.max_steps=40",
                 "train.device=cuda", "--run-dir", str(run), "--no-progress"]) == 0
    return run


def _sources(sample_files: tuple[Path, Path], n: int = 24) -> list[str]:
    return sample_files[0].read_text(encoding="utf-8").splitlines()[:n]


def _same_outputs(cpu: Translator, gpu: Translator, lines: list[str], **options: object) -> None:
    a = cpu.translate(lines, **options)
    b = gpu.translate(lines, **options)
    assert [r.text for r in a] == [r.text for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.score == pytest.approx(y.score, abs=1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("run", ["shipped-rnn", "transformer"])
def test_greedy_beam_and_sampling_on_cuda_equal_the_cpu(run: str, gpu_run: Path,
                                                        sample_files) -> None:
    path = "bible-es-en" if run == "shipped-rnn" else str(gpu_run)
    cpu = Translator.from_checkpoint(path, device="cpu")
    gpu = Translator.from_checkpoint(path, device="cuda")
    assert gpu.device.type == "cuda" and cpu.device.type == "cpu"
    lines = _sources(sample_files)
    _same_outputs(cpu, gpu, lines, beam_size=1)
    _same_outputs(cpu, gpu, lines, beam_size=5, n_best=2)
    _same_outputs(cpu, gpu, lines, beam_size=4, beam_stop="top_finished")
    # sampling: the GPU draws its own random stream, so top-k 1 (deterministic) is compared,
    # and a seed repeats its samples on the GPU
    _same_outputs(cpu, gpu, lines, sample=True, top_k=1, beam_size=1)
    sampled = [r.text for r in gpu.translate(lines, sample=True, seed=3, beam_size=1)]
    assert sampled == [r.text for r in gpu.translate(lines, sample=True, seed=3, beam_size=1)]


@pytest.mark.cuda
def test_attention_comes_back_on_the_cpu(gpu_run: Path, sample_files) -> None:
    gpu = Translator.from_checkpoint(gpu_run, device="cuda")
    result = gpu.translate(_sources(sample_files, 2), beam_size=3, return_attention=True)[0]
    assert result.attention is not None and result.attention.device.type == "cpu"


@pytest.mark.cuda
def test_a_checkpoint_saved_from_the_gpu_loads_on_the_cpu(gpu_run: Path, sample_files) -> None:
    cpu = Translator.from_checkpoint(gpu_run, device="cpu")
    gpu = Translator.from_checkpoint(gpu_run, device="cuda")
    for (name, a), (_, b) in zip(cpu.model.state_dict().items(),
                                 gpu.model.state_dict().items(), strict=True):
        assert a.device.type == "cpu", name
        assert torch.equal(a, b.cpu()), name
    assert all(cpu.translate_lines(_sources(sample_files, 4), beam_size=2))


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_decoding_on_cuda(precision: str, sample_files) -> None:
    from heedful.analysis.metrics import score_corpus

    lines = _sources(sample_files)
    base = Translator.from_checkpoint("bible-es-en", device="cuda").translate_lines(lines)
    low = Translator.from_checkpoint("bible-es-en", device="cuda", precision=precision)
    assert score_corpus(low.translate_lines(lines), base).chrf > 60


@pytest.mark.cuda
def test_translate_cli_on_cuda(tmp_path: Path, capsys) -> None:
    (tmp_path / "in.es").write_text("Y dijo Dios: Sea la luz.\n\nY fué la luz.\n",
                                    encoding="utf-8")
    assert main(["translate", "bible-es-en", "--device", "cuda", "--json", "--beam-size", "5",
                 "--input", str(tmp_path / "in.es")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and rows[0]["translation"] and rows[1]["translation"] == ""
    assert main(["translate", "bible-es-en", "--device", "cuda:0", "--precision", "bf16",
                 "--input", str(tmp_path / "in.es")]) == 0
    assert main(["translate", "bible-es-en", "--device", f"cuda:{torch.cuda.device_count()}",
                 "--input", str(tmp_path / "in.es")]) == 2
    assert "asked for, but this machine has" in capsys.readouterr().err


@pytest.mark.cuda
def test_bench_on_cuda_reports_flops_and_mfu(capsys) -> None:
    from heedful.bench import PEAK_TFLOPS, bench_config, bench_training

    cfg = bench_config("transformer")
    small = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"train_limit": 2000}),
        "tokenizer": cfg.tokenizer.model_copy(update={"vocab_size": 1000})})
    report = bench_training(small, steps=5, warmup=2, precision="bf16",
                            device=torch.device("cuda"))
    assert report["train_device"].startswith("cuda") and report["train_flops_per_token"] > 0
    assert report["train_tflops_per_s"] > 0
    known = any(part in report["device_name"] for part in PEAK_TFLOPS)
    assert (report["mfu"] is not None) == known
    if known:
        assert 0 < report["mfu"] < 1
    print(json.dumps(report))  # the figures, in the test log
    assert main(["bench", "--only", "rnn", "--device", "cuda", "--skip-training",
                 "--rnn-model", "bible-es-en", "--test-limit", "32", "--json"]) == 0
    decoded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert decoded["decode_device"].startswith("cuda") and decoded["beam5_bleu"] > 5
