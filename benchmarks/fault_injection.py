"""Kill a training run with SIGKILL at random moments (or stop it with SIGTERM / SIGINT), resume
it each time, and compare the final parameters with an uninterrupted run of the same seed.
Prints JSON.

    python benchmarks/fault_injection.py              # 20 kills (about 3 minutes)
    python benchmarks/fault_injection.py --kills 3    # the short version the tests run
    python benchmarks/fault_injection.py --signal term --kills 20   # clean stops: seconds from
                                                     # the signal to the exit, checkpoints left

The run is a small model on the bundled 200-pair sample with a checkpoint every 2 steps and
dropout on (so the RNG state must be restored too). After every kill all checkpoints on disk
are verified against their manifests; a damaged one would be counted (resume skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from heedful.checkpoint import CheckpointError, verify_checkpoint
from heedful.datasets import dataset_file


def train_argv(run_dir: Path, steps: int) -> list[str]:
    src, tgt = dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
    return [sys.executable, "-m", "heedful", "train", "data.dataset=null",
            f"data.train.src={src}", f"data.train.tgt={tgt}", "tokenizer.vocab_size=500",
            "model.embed_dim=32", "model.hidden_dim=32", "model.dropout=0.3",
            "train.batch_tokens=600", f"train.max_steps={steps}", "train.valid_every=2",
            "train.keep_last=3", "train.seed=11", "--run-dir", str(run_dir), "--no-progress",
            "--resume"]


def final_weights(run_dir: Path, steps: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step-{steps:08d}" / "model.safetensors"))


def count_corrupt(run_dir: Path) -> int:
    root = run_dir / "checkpoints"
    bad = 0
    for ckpt in root.glob("step-*") if root.exists() else []:
        try:
            verify_checkpoint(ckpt)
        except CheckpointError:
            bad += 1
    return bad


def run(kills: int, steps: int, seed: int, sig: signal.Signals = signal.SIGKILL
        ) -> dict[str, object]:
    # one GEMM backend in every process: "auto" times both at start-up and may pick another
    # one in a resumed process on a loaded machine (equal results need equal kernels)
    os.environ.setdefault("HEEDFUL_CPU_GEMM", "mkl")
    rng = random.Random(seed)
    stop_seconds: list[float] = []
    clean_stops, saved_step_reached, before_training = 0, 0, 0
    work = Path(tempfile.mkdtemp(prefix="heedful-faults-"))
    try:
        ref = work / "reference"
        start = time.monotonic()
        subprocess.run(train_argv(ref, steps), check=True, capture_output=True)
        duration = time.monotonic() - start
        faulty = work / "faulty"
        done_kills, corrupt, finished_early, failed = 0, 0, 0, 0
        while done_kills < kills:
            # every start after the first is a resume of the killed run
            proc = subprocess.Popen(train_argv(faulty, steps), stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            delay = rng.uniform(0.2, duration)
            try:
                if proc.wait(timeout=delay) != 0:  # (its output fits the pipe: a few lines)
                    failed += 1  # a resume that stopped with an error
                finished_early += 1  # it completed before the kill: start over from scratch
                shutil.rmtree(faulty)
                continue
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                sent = time.monotonic()
                out, _ = proc.communicate()
                if sig != signal.SIGKILL:
                    stop_seconds.append(time.monotonic() - sent)
                    # a signal before training began ends the process as the default would
                    before_training += proc.returncode == -sig
                    if proc.returncode == 128 + sig:
                        clean_stops += 1
                        reached = re.search(r"stopped after (\d+) steps", out)
                        if reached and (faulty / "checkpoints"
                                        / f"step-{int(reached.group(1)):08d}").is_dir():
                            saved_step_reached += 1
            done_kills += 1
            corrupt += count_corrupt(faulty)
        final = subprocess.run(train_argv(faulty, steps), capture_output=True, text=True)
        if final.returncode != 0:
            failed += 1
        # each kill was followed by a resume (the next start, or the final run)
        resumes = done_kills - failed
        a, b = final_weights(ref, steps), final_weights(faulty, steps)
        max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        return {"kills": done_kills, "successful_resumes": resumes, "failed_resumes": failed,
                "corrupt_checkpoints_found": corrupt, "runs_finished_before_kill": finished_early,
                "max_parameter_difference": max_diff, "steps": steps,
                "reference_run_seconds": round(duration, 1),
                "resumed_from_message": "resuming from" in final.stdout,
                "signal": sig.name, **({} if sig == signal.SIGKILL else {
                    "clean_stops": clean_stops, "stopped_before_training": before_training,
                    "checkpoint_of_step_reached": saved_step_reached,
                    "stop_seconds_median": round(statistics.median(stop_seconds), 2),
                    "stop_seconds_max": round(max(stop_seconds), 2)})}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--signal", choices=["kill", "term", "int"], default="kill")
    args = parser.parse_args()
    sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}[args.signal]
    print(json.dumps(run(args.kills, args.steps, args.seed, sig)))


if __name__ == "__main__":
    main()
