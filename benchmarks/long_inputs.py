"""Long inputs: Transformer training time and peak memory per step vs sequence length.

    python benchmarks/long_inputs.py                       # lengths 128 512 2048 4096
    python benchmarks/long_inputs.py --lengths 128 512 --backend math

The benchmark Transformer (3+3 layers, d_model 256, 4 heads, ff 1024, 8k vocabulary) trains
on one sequence pair of source and target length L (random tokens) per step: forward,
backward, Adam. Each length runs in a fresh process; memory = peak RSS during the measured
steps minus the RSS before them (so the weights, Adam state and the interpreter are not
counted). ``--backend`` picks PyTorch's attention kernel: ``default`` (the fused
flash/memory-efficient kernels scaled_dot_product_attention chooses; memory linear in L) or
``math`` (the explicit softmax(QK^T)V that materialises the L x L weights; quadratic).
Prints one JSON object and a table; writes docs/long_inputs.{json,md} unless --no-docs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def one(length: int, steps: int, backend: str, threads: int, attention_dropout: float
        ) -> dict[str, object]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from heedful.nn.architectures import build_model
    from heedful.presets import bench_config
    from heedful.training.step import loss_sum

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = bench_config("transformer").model.model_copy(update={
        "max_positions": length + 2, "attention_dropout": attention_dropout})
    model = build_model(cfg, 8000, 8000).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def batch(n: int) -> object:
        class Batch:
            src = torch.randint(4, 8000, (1, n))
            src_mask = torch.ones(1, n, dtype=torch.bool)
            tgt_in = torch.randint(4, 8000, (1, n))
            tgt_out = torch.randint(4, 8000, (1, n))
            tgt_mask = torch.ones(1, n, dtype=torch.bool)
        return Batch

    kernels = ([SDPBackend.MATH] if backend == "math" else
               [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def step(b: object, n: int) -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=False)  # keep the gradient buffers: not part of the step
        with sdpa_kernel(kernels):
            (loss_sum(model, b, 0.1) / n).backward()
        opt.step()
        return time.perf_counter() - start

    step(batch(8), 8)  # allocates gradients and Adam state
    before = rss_mb()
    long_batch = batch(length)
    times = [step(long_batch, length) for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"length": length, "backend": backend, "attention_dropout": attention_dropout,
            "steps": steps,
            "step_s_median": round(statistics.median(times[1:] or times), 3),
            "first_step_s": round(times[0], 3),
            "peak_mb_over_start": round(peak - before), "peak_rss_mb": round(peak),
            "target_tokens_per_s": round(length / statistics.median(times[1:] or times))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 4096])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", choices=["default", "math", "both"], default="both")
    ap.add_argument("--attention-dropout", type=float, default=0.0,
                    help="0 (default) lets the fused flash kernel run; > 0 forces the math "
                         "kernel on CPU")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.steps, args.backend, args.threads,
                             args.attention_dropout)))
        return
    backends = ["default", "math"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        for length in args.lengths:
            done = subprocess.run([sys.executable, __file__, "--one", str(length), "--steps",
                                   str(args.steps), "--threads", str(args.threads),
                                   "--backend", backend, "--attention-dropout",
                                   str(args.attention_dropout)], capture_output=True, text=True,
                                  check=False)
            if done.returncode:
                tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                rows.append({"length": length, "backend": backend, "error": tail[0][:200]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    lines = ["| attention kernel | length L | s / step | target tok/s | peak MB over start |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['length']:,} | failed: {r['error']} | | |")
        else:
            lines.append(f"| {r['backend']} | {r['length']:,} | {r['step_s_median']} | "
                         f"{r['target_tokens_per_s']:,} | {r['peak_mb_over_start']:,} |")
    if not args.no_docs:
        DOCS.mkdir(exist_ok=True)
        (DOCS / "long_inputs.json").write_text(json.dumps(rows, indent=1) + "\n")
        (DOCS / "long_inputs.md").write_text(
            "Transformer (3+3, d 256, 4 heads, ff 1024) training, one sequence pair of source "
            f"and target length L per step, {args.threads} threads, attention dropout "
            f"{args.attention_dropout} (`python benchmarks/long_inputs.py`).\n\n"
            + "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
