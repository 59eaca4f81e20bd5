"""DDP through torchrun on CPU (gloo, 2 processes): the same parameters as one process with
the same global batch, also across a resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heedful.checkpoint import find_checkpoint, model_state
from heedful.cli import main
from heedful.datasets import dataset_file

TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "model.dropout=0.0", "train.batch_tokens=600", "train.valid_every=3",
        "train.log_every=1", "train.seed=7", "train.lr=0.003", "data.dev_limit=20",
        "decode.beam_size=1"]


def _data() -> list[str]:
    src, tgt = dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
    return ["data.dataset=null"] + [f"data.{split}.{side}={path}" for split in
                                    ("train", "dev", "test")
                                    for side, path in (("src", src), ("tgt", tgt))]


def _torchrun(run: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "heedful", "train", *args, "--run-dir", str(run), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return model_state(find_checkpoint(run, "latest") / "model.safetensors")


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.timeout(900)
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    single = tmp_path / "single"
    assert main(["train", *_data(), *TINY, "train.accumulate=2", "train.max_steps=6",
                 "--run-dir", str(single), "--no-progress"]) == 0
    ddp = tmp_path / "ddp"
    # both ranks map the store `heedful prepare` wrote: rank 0 checks it, nobody rewrites it
    assert main(["prepare", *_data(), *TINY, "--run-dir", str(ddp)]) == 0
    manifest = (ddp / "prepared" / "manifest.json").stat().st_mtime_ns
    _torchrun(ddp, *_data(), *TINY, "train.accumulate=1", "train.max_steps=6")
    _assert_same(single, ddp)
    assert (ddp / "prepared" / "manifest.json").stat().st_mtime_ns == manifest
    log = (ddp / "train.log").read_text()
    assert "using the prepared store in" in log
    assert "distributed: rank 0 of 2" in log
    assert (ddp / "train.rank1.log").exists()  # rank 1 logs beside, never over, rank 0
    # the untrained initial weights would differ from these: training really happened
    assert (ddp / "checkpoints" / "step-00000006").is_dir()


@pytest.mark.timeout(900)
def test_distributed_resume_with_accumulation(tmp_path: Path) -> None:
    single = tmp_path / "single"
    assert main(["train", *_data(), *TINY, "train.accumulate=4", "train.max_steps=6",
                 "--run-dir", str(single), "--no-progress"]) == 0
    ddp = tmp_path / "ddp"
    _torchrun(ddp, *_data(), *TINY, "train.accumulate=2", "train.max_steps=3")
    assert find_checkpoint(ddp, "latest").name == "step-00000003"
    _torchrun(ddp, "train.max_steps=6", "--resume")
    _assert_same(single, ddp)


def test_bf16_autocast_trains_on_cpu_and_fp16_needs_a_gpu(tmp_path: Path, capsys) -> None:
    from heedful.runtime.precision import cpu_has_native_bf16

    run = tmp_path / "bf16"
    code = main(["train", *_data(), *TINY, "train.precision=bf16", "train.max_steps=3",
                 "--run-dir", str(run), "--no-progress"])
    if cpu_has_native_bf16():
        assert code == 0
        weights = _weights(run)
        assert all(w.dtype == torch.float32 for w in weights.values())  # fp32 master weights
        assert all(torch.isfinite(w).all() for w in weights.values())
    else:  # an AVX2-only CPU, say: a clear error before any work
        assert code == 2
        assert "train.precision: bf16 needs a CPU with native bf16" in capsys.readouterr().err
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["train", *_data(), *TINY, "train.precision=fp16", "train.max_steps=1",
                     "--run-dir", str(tmp_path / "fp16"), "--no-progress"]) == 2
        assert "train.precision: fp16 needs a CUDA GPU" in capsys.readouterr().err


def test_time_budget_counts_over_resumes(tmp_path: Path) -> None:
    from heedful.config import load_config
    from heedful.training.trainer import train

    cfg = load_config(None, [*_data(), *TINY, "train.max_minutes=0.02", "train.valid_every=1000"])
    first = train(cfg, tmp_path / "run", progress=False)
    assert first.stopped_because == "time budget" and first.steps > 0
    again = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert again.steps == first.steps  # the budget was spent: not one more step
    assert again.stopped_because == "time budget"


def test_exit_now_flushes_what_was_printed_and_keeps_the_exit_code() -> None:
    # stdout is a pipe here, so Python block-buffers it: without the flush os._exit loses it
    code = ("import logging, sys; from heedful.training.distributed import exit_now; "
            "logging.basicConfig(stream=sys.stderr); print('saved', end=''); "
            "logging.getLogger('x').warning('logged'); exit_now(3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "saved"
    assert "logged" in proc.stderr


@pytest.mark.timeout(300)
def test_an_error_under_torchrun_is_reported_and_fails_the_launch(tmp_path: Path) -> None:
    # the error comes after the ranks joined the process group: each leaves it without
    # waiting for the others, prints why, and exits with the console script's code
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "heedful", "train", *_data(), *TINY, "train.precision=fp16",
           "--run-dir", str(tmp_path / "ddp"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert proc.stderr.count("heedful: error: train.precision: fp16 needs a CUDA GPU") == 2


def test_bf16_on_a_cpu_without_it_is_refused_up_front(tmp_path: Path, capsys, monkeypatch) -> None:
    # what a CPU without AVX512-BF16/AMX answers, wherever this runs
    import heedful.runtime.precision

    monkeypatch.setattr(heedful.runtime.precision, "cpu_has_native_bf16", lambda: False)
    assert main(["train", *_data(), *TINY, "train.precision=bf16", "train.max_steps=1",
                 "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "heedful: error: train.precision: bf16 needs a CPU with native bf16" in err
    assert "Use fp32 here" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert main(["bench", "--only", "rnn", "--steps", "1", "--warmup", "0",
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "heedful: error: --precision: bf16 needs a CPU with native bf16" in err


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_picks_bf16_only_where_the_cpu_computes_in_it(
        tmp_path: Path, monkeypatch, native: bool) -> None:
    import heedful.runtime.precision
    from heedful.runtime.precision import cpu_has_native_bf16, resolve_precision

    really_native = cpu_has_native_bf16()
    monkeypatch.setattr(heedful.runtime.precision, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"  # an explicit choice stands
    if native and not really_native:
        # oneDNN has no bf16 LSTM kernel for such a CPU (AMD Zen 3: "could not create a
        # primitive descriptor"): the choice is checked above, the training needs the CPU
        pytest.skip("this CPU has no native bf16: training in it is checked where it has")
    run = tmp_path / "run"
    assert main(["train", *_data(), *TINY, "train.precision=auto", "train.max_steps=2",
                 "--run-dir", str(run), "--no-progress"]) == 0
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"train.precision auto: {'bf16' if native else 'fp32'} on cpu" in log
    assert all(torch.isfinite(w).all() for w in _weights(run).values())


def _worker_pids(agent: int, rank: int) -> list[int]:
    """The pids of the torchrun agent's workers of ``rank`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == agent and f"RANK={rank}".encode() in environ:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_rank_is_restarted_and_the_job_resumes_by_itself(tmp_path: Path) -> None:
    import re
    import signal
    import time

    single = tmp_path / "single"
    steps = ["train.accumulate=2", "train.max_steps=12"]
    assert main(["train", *_data(), *TINY, *steps, "--run-dir", str(single),
                 "--no-progress"]) == 0
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "--max-restarts", "1", "-m", "heedful", "train", *_data(), *TINY,
           "train.accumulate=1", "train.max_steps=12", "--run-dir", str(ddp), "--no-progress"]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = ddp / "train.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and re.search(r"step 5 epoch", log.read_text())):
        assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[0]
        time.sleep(0.05)
    [rank1] = _worker_pids(agent.pid, 1)
    os.kill(rank1, signal.SIGKILL)
    out, _ = agent.communicate(timeout=600)
    assert agent.returncode == 0, out[-3000:]
    assert "this is a bug in heedful" not in out, out[-3000:]  # a lost peer is said as such
    text = log.read_text()
    assert "torchrun restart 1: resuming from the newest intact checkpoint" in text
    assert re.search(r"resumed from .*step-0000000[3-9] at step [3-9]", text)
    _assert_same(single, ddp)
