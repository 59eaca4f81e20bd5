"""Training on a CUDA GPU: the same update as on the CPU for every architecture, exact
resume, a GPU checkpoint that loads on the CPU, bf16 RNNs kept out of fp16, DDP over nccl.

Marked ``cuda`` (all but the CPU check of their configurations): collected everywhere, skipped
with the reason where there is no GPU (see tests/conftest.py); ``benchmarks/gpu_check.sh`` runs
them on a GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heedful.checkpoint import find_checkpoint, model_state
from heedful.cli import main
from heedful.config import config_from_dict
from heedful.data import make_batch
from heedful.nn.architectures import build_model
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
from heedful.training import distributed
from heedful.training.step import StepRunner, build_optimizer

cuda = pytest.mark.cuda

ARCHS = {
    "rnn": {"arch": "rnn", "embed_dim": 32, "hidden_dim": 32},
    "transformer": {"arch": "transformer", "attention": "multihead", "attention_heads": 4,
                    "embed_dim": 32, "hidden_dim": 32, "ff_dim": 64, "encoder_layers": 2,
                    "decoder_layers": 2, "input_feeding": False},
    "conv": {"arch": "conv", "attention": "dot", "embed_dim": 32, "hidden_dim": 32,
             "encoder_layers": 2, "decoder_layers": 2},
}


def _batches() -> list:
    out = []
    for n in range(4, 8):
        src = [[*range(5, 5 + n + k), EOS_ID] for k in range(3)]
        tgt = [list(range(9, 10 + n + k)) for k in range(3)]
        out.append(make_batch(src, tgt, PAD_ID, BOS_ID, EOS_ID))
    return out


def _one_step(arch: str, device: torch.device) -> dict[str, torch.Tensor]:
    cfg = config_from_dict({"model": {**ARCHS[arch], "dropout": 0.0},
                            "train": {"device": str(device), "tf32": False}}, "cuda test")
    torch.manual_seed(0)
    model = build_model(cfg.model, 60, 60).to(device)
    runner = StepRunner(model, build_optimizer(model, cfg.train), cfg,
                        distributed.DistContext(device=device))
    runner.train_step(_batches()[:1], 0, 1.0)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@cuda
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_one_update_on_the_gpu_equals_the_cpus(arch: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu, gpu = _one_step(arch, torch.device("cpu")), _one_step(arch, torch.device("cuda"))
    for name in cpu:
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_gpu_rows_build_and_train_on_the_cpu(arch: str) -> None:
    """The configurations above are checked here, where the ``cuda`` tests cannot run."""
    weights = _one_step(arch, torch.device("cpu"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def _data(sample_files) -> list[str]:
    src, tgt = sample_files
    return ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]


TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "model.dropout=0.2", "train.batch_tokens=600", "train.valid_every=3",
        "train.log_every=1", "train.seed=7", "train.device=cuda", "train.deterministic=true",
        "data.dev_limit=20", "decode.beam_size=1"]


@cuda
def test_resume_on_the_gpu_is_exact_and_its_checkpoint_loads_on_the_cpu(
        tmp_path: Path, sample_files) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", *_data(sample_files), *TINY, "train.max_steps=6", "--run-dir",
                 str(whole), "--no-progress"]) == 0
    assert main(["train", *_data(sample_files), *TINY, "train.max_steps=3", "--run-dir",
                 str(parts), "--no-progress"]) == 0
    assert main(["train", "train.max_steps=6", "--resume", "--run-dir", str(parts),
                 "--no-progress"]) == 0
    a = model_state(find_checkpoint(whole, "latest") / "model.safetensors")
    b = model_state(find_checkpoint(parts, "latest") / "model.safetensors")
    for name in a:  # dropout on the GPU draws from the CUDA generator: saved and restored
        assert torch.equal(a[name], b[name]), name
    from heedful.decoding.translator import Translator

    cpu = Translator.from_checkpoint(whole, device="cpu")
    assert next(cpu.model.parameters()).device.type == "cpu"
    assert cpu.translate(["Y dijo Dios."], beam_size=1)[0].text is not None


@cuda
def test_bf16_autocast_keeps_cudnn_rnns_out_of_fp16() -> None:
    from heedful.nn.rnn import bf16_autocast_on_cuda, run_rnn

    rnn = torch.nn.LSTM(8, 8, batch_first=True).cuda()
    x = torch.randn(2, 5, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert bf16_autocast_on_cuda(x)
        out, _ = run_rnn(rnn, x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, rnn(x)[0], rtol=1e-3, atol=1e-3)


@cuda
def test_ddp_over_nccl_with_one_rank_gives_the_plain_update() -> None:
    """The DDP wrapping, hooks and nccl all-reduce of one rank change nothing."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from heedful.training.step import LossModule, to_device

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        device = torch.device("cuda", 0)
        batch = to_device(_batches()[0], device)
        grads = []
        for wrap in (False, True):
            cfg = config_from_dict({"model": {**ARCHS["transformer"], "dropout": 0.0}}, "t")
            torch.manual_seed(0)
            model = build_model(cfg.model, 60, 60).to(device)
            loss_module = LossModule(model, 0.1, None, "fp32", device)
            fn = (DistributedDataParallel(loss_module, device_ids=[0], broadcast_buffers=False)
                  if wrap else loss_module)
            fn(batch).backward()
            grads.append([p.grad.detach().cpu() for p in model.parameters()])
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.timeout(900)
def test_two_nccl_ranks_match_one_process(tmp_path: Path, sample_files) -> None:
    tiny = [a for a in TINY if not a.startswith("model.dropout")] + ["model.dropout=0.0"]
    single = tmp_path / "single"
    assert main(["train", *_data(sample_files), *tiny, "train.accumulate=2",
                 "train.max_steps=6", "--run-dir", str(single), "--no-progress"]) == 0
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "heedful", "train", *_data(sample_files), *tiny, "train.accumulate=1",
           "train.max_steps=6", "--run-dir", str(ddp), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = model_state(find_checkpoint(single, "latest") / "model.safetensors")
    b = model_state(find_checkpoint(ddp, "latest") / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3, msg=name)
