"""SIGTERM / SIGINT during training: a checkpoint of the step reached within seconds, an exit
status that says a signal stopped it, an exact resume; a second signal exits at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from heedful.checkpoint import verify_checkpoint


def _argv(run_dir: Path, sample_files, steps: int, *extra: str) -> list[str]:
    src, tgt = sample_files
    # no periodic checkpoint before the end: what the signal saves is all there is
    return [sys.executable, "-m", "heedful", "train", "data.dataset=null",
            f"data.train.src={src}", f"data.train.tgt={tgt}", "tokenizer.vocab_size=500",
            "model.embed_dim=32", "model.hidden_dim=32", "model.dropout=0.3",
            "train.batch_tokens=600", f"train.max_steps={steps}", "train.valid_every=100000",
            "train.log_every=2", "train.seed=11", "train.threads=1", "--run-dir", str(run_dir),
            "--no-progress", *extra]


# one GEMM backend in every process: "auto" times both at start-up and, on a loaded machine,
# may pick another one in the resumed process than in the uninterrupted one
ENV = {**os.environ, "HEEDFUL_CPU_GEMM": "mkl"}


def _start_and_wait_for_training(argv: list[str], run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    log = run_dir / "train.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and re.search(r"step 4 epoch", log.read_text(encoding="utf-8")):
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not reach step 4 in 120 s")


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def test_sigterm_saves_the_step_reached_and_resume_is_exact(tmp_path: Path,
                                                            sample_files) -> None:
    run = tmp_path / "stopped"
    proc = _start_and_wait_for_training(_argv(run, sample_files, 100_000), run)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    stop_seconds = time.monotonic() - sent
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert stop_seconds < 10
    reached = int(re.search(r"stopped after (\d+) steps \(stop signal \(SIGTERM\)\)",
                            out).group(1))
    assert f"continue with: heedful train --resume --run-dir {run}" in err
    assert reached >= 4
    verify_checkpoint(run / "checkpoints" / f"step-{reached:08d}")
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "SIGTERM received: saving a checkpoint after this update" in log
    assert f"stopped after {reached} steps: stop signal (SIGTERM)" in log
    # resume to a few steps further == the uninterrupted run to there
    end = reached + 3
    resumed = subprocess.run(_argv(run, sample_files, end, "--resume"), capture_output=True,
                             text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    subprocess.run(_argv(whole, sample_files, end), check=True, capture_output=True,
                   timeout=300, env=ENV)
    a, b = _weights(run, end), _weights(whole, end)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


SECOND_SIGNAL = """
import os, signal, sys, time
from heedful.training.signals import StopSignals
with StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGINT)
    while signals.received is None:
        time.sleep(0.01)
    print("first: keep going", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
    print("not reached", flush=True)
"""


def test_a_second_signal_exits_at_once() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert proc.stdout == "first: keep going\n"
    assert "SIGINT again: exiting now" in proc.stderr
    assert time.monotonic() - start < 25


def test_the_handlers_are_restored_after_training() -> None:
    from heedful.training.signals import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_before_the_first_update_saves_nothing_and_says_so(tmp_path: Path,
                                                                     sample_files) -> None:
    from heedful.config import load_config
    from heedful.training import distributed
    from heedful.training.reporter import Reporter
    from heedful.training.trainer import Trainer

    src, tgt = sample_files
    cfg = load_config(None, ["data.dataset=null", f"data.train.src={src}",
                             f"data.train.tgt={tgt}", "tokenizer.vocab_size=500",
                             "model.embed_dim=16", "model.hidden_dim=16", "train.max_steps=5"])
    run = tmp_path / "run"
    run.mkdir()
    with Reporter(run, 0, False) as reporter:
        trainer = Trainer.setup(cfg, run, distributed.setup("cpu"), reporter)
        trainer.signals.received = signal.SIGTERM  # as if it came during setup's last moment
        result = trainer.fit()
    assert (result.steps, result.stop_signal, result.best_checkpoint) == (0, signal.SIGTERM,
                                                                          None)
    assert result.stopped_because == "stop signal (SIGTERM)"
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
