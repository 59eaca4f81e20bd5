"""What training on a GPU needs, checked on the CPU: devices resolved up front with one-line
errors, every device's RNG in the checkpoint, no host synchronisation per update, rank 0's long
work outside the collective timeout, bf16-safe local attention and RNNs. (The runs on a real GPU
are tests/test_cuda_train.py, marked ``cuda``.)"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from heedful.cli import main
from heedful.config import config_from_dict
from heedful.errors import ConfigError
from heedful.runtime import device as device_mod
from heedful.runtime.device import DeviceError, check_world_fits, resolve_device
from heedful.training import distributed
from heedful.training.state import TrainerState, capture_cuda_rng, capture_rng, restore_rng


def test_devices_resolve_and_missing_ones_are_one_line_errors(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # the suite pins auto to the CPU
    monkeypatch.setattr(device_mod, "cuda_count", lambda: 0)
    monkeypatch.delenv(device_mod.AUTO_ENV)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^--device: 'gpu' is not a device; use auto, cpu, "):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match=r"^--device: 'cpu:1' is not a device"):
        resolve_device("cpu:1")
    with pytest.raises(DeviceError, match=r"^train.device: cuda asked for, but this machine "
                                          r"has no CUDA GPU .*; use cpu$"):
        resolve_device("cuda", "train.device")
    monkeypatch.setattr(device_mod, "cuda_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"^--device: GPU 3 asked for, but this machine has "
                                          r"2 GPU\(s\) \(0\.\.1\)"):
        resolve_device("cuda:3")
    with pytest.raises(DeviceError, match=r"GPU 2 \(LOCAL_RANK\) asked for.*--nproc_per_node "
                                          r"must not exceed the number of GPUs"):
        resolve_device("cuda", "train.device", local_rank=2)
    with pytest.raises(DeviceError, match=r"^--nproc_per_node: 4 ranks on this node but only 2 "
                                          r"GPU\(s\); one rank per GPU$"):
        check_world_fits(4, torch.device("cuda", 0))
    check_world_fits(4, torch.device("cpu"))  # CPU ranks share the cores: allowed


def test_train_on_a_missing_gpu_is_one_error_line(tmp_path: Path, sample_files, capsys) -> None:
    src, tgt = sample_files
    code = main(["train", "data.dataset=null", f"data.train.src={src}",
                 f"data.train.tgt={tgt}", "train.device=cuda", "--run-dir", str(tmp_path / "r"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "heedful: error: train.device: cuda asked for, but this machine has no CUDA GPU" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "prepared").exists()  # refused before any work


def test_train_device_must_name_a_device() -> None:
    with pytest.raises(ConfigError, match=r"train\.device"):
        config_from_dict({"train": {"device": "gpu"}}, "test")
    assert config_from_dict({"train": {"device": "cuda:1"}}, "test").train.device == "cuda:1"


def test_every_devices_rng_is_saved_and_an_old_state_still_loads() -> None:
    assert capture_cuda_rng() is None  # CUDA not in use here: nothing to save, nothing started
    state = TrainerState.from_json({"step": 3, "rng_torch": capture_rng()})
    assert state.rng_cuda is None  # a checkpoint from before the field loads
    saved = capture_rng()
    first = torch.rand(3)
    # a CUDA state saved on a GPU machine is ignored on one without (the CPU's resumes)
    restore_rng(saved, ["AAAA"])
    assert torch.equal(torch.rand(3), first)
    assert TrainerState.from_json(TrainerState(rng_cuda=["x"]).to_json()).rng_cuda == ["x"]


def _tiny_runner(arch: str = "rnn"):
    from heedful.data import make_batch
    from heedful.nn.architectures import build_model
    from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from heedful.training.step import StepRunner, build_optimizer

    cfg = config_from_dict({"model": {"arch": arch, "embed_dim": 16, "hidden_dim": 16},
                            "train": {"device": "cpu"}}, "test")
    torch.manual_seed(0)
    model = build_model(cfg.model, 50, 50)
    runner = StepRunner(model, build_optimizer(model, cfg.train), cfg,
                        distributed.DistContext())
    batches = []
    for n in range(3, 6):
        src = [[*range(5, 5 + n + k), EOS_ID] for k in range(3)]
        tgt = [list(range(7, 8 + n + k)) for k in range(3)]
        batches.append(make_batch(src, tgt, PAD_ID, BOS_ID, EOS_ID))
    return runner, batches


def test_an_update_never_waits_for_the_device(monkeypatch) -> None:
    """Reading a tensor's value on the host (``float``, ``item``, ``tolist``, ``bool``) is
    what makes the host wait for a GPU; an update must not do it (the trainer reads the loss
    once per log window)."""
    runner, batches = _tiny_runner()
    reads: list[str] = []
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        original = getattr(Tensor, name)

        def counting(self: Tensor, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Tensor, name, counting)
    stats = [runner.train_step(batches[i:i + 1], i, 1.0) for i in range(3)]
    monkeypatch.undo()
    assert reads == []
    assert all(isinstance(s.loss_sum, Tensor) and s.loss_sum.dim() == 0 for s in stats)
    assert all(float(s.loss_sum) > 0 for s in stats)


def test_local_attention_positions_are_exact_under_bf16_autocast() -> None:
    """bf16 holds integers exactly only up to 256: positions and the window around p_t must
    be float32 whatever the autocast dtype."""
    from heedful.nn.attention import LocalAttention

    torch.manual_seed(0)
    attn = LocalAttention(8, 8, window=3)
    s = 600
    query, keys = torch.randn(2, 4, 8), torch.randn(2, s, 8)
    mask = torch.ones(2, s, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        centre = attn.centre(query, mask)  # (B, Tq)
        _, weights, _ = attn(query, keys, keys, mask)
    assert centre.dtype == torch.float32 and weights is not None
    assert centre.gt(300).any()  # the test reaches past bf16's exact integers
    positions = torch.arange(s, dtype=torch.float32)
    window = (positions[None, None] - centre[:, :, None]).abs() <= 3  # (B, Tq, S)
    assert torch.equal(weights.squeeze(1) > 0, window)  # exactly the window, no rounding


def test_rnn_runs_as_asked_off_the_gpu() -> None:
    from heedful.nn.rnn import bf16_autocast_on_cuda, run_rnn

    rnn = torch.nn.GRU(4, 4, batch_first=True)
    x = torch.randn(2, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bf16_autocast_on_cuda(x)  # the float32 detour is for cuDNN only
    torch.testing.assert_close(run_rnn(rnn, x)[0], rnn(x)[0], rtol=0, atol=0)


def test_gpu_math_modes_are_options(monkeypatch) -> None:
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision",
                        lambda p: calls.append(("matmul", p)))
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda on, warn_only=False: calls.append(("deterministic", on)))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    device_mod.configure_cuda_math(tf32=False)
    device_mod.use_deterministic_kernels()
    assert calls == [("matmul", "highest"), ("deterministic", True)]
    assert torch.backends.cudnn.allow_tf32 is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    cfg = config_from_dict({}, "test").train
    assert (cfg.tf32, cfg.deterministic, cfg.dist_timeout_minutes) == (True, False, 60.0)


def test_the_process_group_gets_the_configured_timeout(monkeypatch) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    ctx = distributed.setup("cpu", timeout_minutes=90)
    assert (ctx.rank, ctx.world_size, ctx.device) == (1, 2, torch.device("cpu"))
    assert seen["backend"] == "gloo"
    assert seen["timeout"].total_seconds() == 90 * 60  # type: ignore[union-attr]
    monkeypatch.setattr(distributed, "_joined", False)


def _rank(rank: int, port: int, results: multiprocessing.Queue[object]) -> None:
    import datetime as dt

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=dt.timedelta(seconds=2))
    ctx = distributed.DistContext(rank, 2)
    try:
        # rank 0's work outlasts the 2-second collective timeout; the others must not fail
        got = ctx.main_first("slow", lambda: time.sleep(5) or "built")
        agreed = ctx.any(rank == 0)
        results.put((rank, got, agreed))
    except Exception as err:  # reported to the test, not lost in the child
        results.put((rank, repr(err), None))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_rank_zero_may_outlast_the_collective_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=100) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == [(0, "built", True), (1, None, True)]
