"""``heedful bench``'s FLOP count (torch.utils.flop_counter over one update) and MFU."""

from __future__ import annotations

import pytest
import torch

from heedful.bench import count_step_flops, peak_tflops, utilization
from heedful.config import load_config
from heedful.data import Batch
from heedful.nn.architectures import build_model, count_parameters, model_config
from heedful.tokenizer import BOS_ID, EOS_ID
from heedful.training.distributed import DistContext
from heedful.training.step import StepRunner, build_optimizer

VOCAB, DIM = 64, 64


def _runner() -> StepRunner:
    torch.manual_seed(0)
    cfg = load_config(None, ["train.device=cpu"])
    cfg = cfg.model_copy(update={"model": model_config(
        arch="transformer", attention="multihead", attention_heads=4, ff_dim=4 * DIM,
        input_feeding=False, embed_dim=DIM, hidden_dim=DIM, encoder_layers=2,
        decoder_layers=2)})
    model = build_model(cfg.model, VOCAB, VOCAB).train()
    return StepRunner(model, build_optimizer(model, cfg.train), cfg, DistContext())


def _batch(rows: int, length: int = 16) -> Batch:
    gen = torch.Generator().manual_seed(rows)
    src = torch.randint(4, VOCAB, (rows, length), generator=gen)
    body = torch.randint(4, VOCAB, (rows, length - 1), generator=gen)
    tgt_in = torch.cat([torch.full((rows, 1), BOS_ID), body], 1)
    tgt_out = torch.cat([body, torch.full((rows, 1), EOS_ID)], 1)
    ones = torch.ones(rows, length, dtype=torch.bool)
    return Batch(src, ones, tgt_in, tgt_out, ones, rows * length)


def test_flops_per_token_are_about_six_per_parameter_and_scale_with_the_batch() -> None:
    runner = _runner()
    params = count_parameters(runner.model)
    small = count_step_flops(runner, [_batch(4)], 0)
    large = count_step_flops(runner, [_batch(8)], 1)
    assert small > 0
    assert large / small == pytest.approx(2.0, rel=0.02)  # linear in the batch's tokens
    per_token = small / (4 * 16)
    # forward 2 + backward 4 FLOPs per weight and token (embedding lookups are no products;
    # attention adds a little at this length)
    assert 0.8 * 6 * params < per_token < 1.3 * 6 * params


def test_mfu_against_the_data_sheet_peak(monkeypatch) -> None:
    name, peak = peak_tflops(torch.device("cpu"), "fp32")
    assert (name, peak) == ("cpu", None)
    cpu = utilization(1e6, 4e5, torch.device("cpu"), "fp32")
    assert cpu["train_tflops_per_s"] == pytest.approx(0.4) and cpu["mfu"] is None
    gpu = torch.device("cuda", 0)  # only named here: nothing runs on it
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "NVIDIA H200")
    report = utilization(1e6, 4e8, gpu, "bf16")  # 400 TFLOP/s achieved
    assert report["peak_tflops"] == 989.0 and report["mfu"] == pytest.approx(400 / 989, abs=1e-4)
    assert report["fraction_of_measured_ceiling"] == pytest.approx(400 / 790, abs=1e-4)
    assert utilization(1e6, 4e8, gpu, "fp32")["mfu"] == pytest.approx(400 / 494.7, abs=1e-4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "NVIDIA A10")
    unknown = utilization(1e6, 4e8, gpu, "bf16")
    assert unknown["mfu"] is None and unknown["device_name"] == "NVIDIA A10"
    assert unknown["fraction_of_measured_ceiling"] is None
