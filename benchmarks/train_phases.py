"""Where a training update of a bench configuration spends its time, by phase and by module.

    python benchmarks/train_phases.py [--config transformer] [--precision bf16] [--updates 8]

Builds the configuration as ``heedful bench`` does (the trainer's own StepRunner, real
bible-es-en batches, 2 threads, glibc told to keep freed memory), runs 5 untimed updates, then
times ``--updates`` more with ``time.perf_counter``: forward (the loss module, which for the
fused output layer includes that layer's gradients), backward, gradient norm, optimizer step
(medians, ms); and, over the same forward passes, the time inside each Transformer module kind
(summed per update). Plain timers, not ``torch.profiler``: on this project's machines the
profiler (with shapes recorded) inflated the large element-wise operations several-fold.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from compare_versions import cpu_name

from heedful.runtime.allocator import bound_kernel_caches, retain_freed_memory

MODULES = {  # label -> (module path, class, method)
    "encoder": ("heedful.nn.transformer", "TransformerSeq2Seq", "encode"),
    "decoder": ("heedful.nn.transformer", "TransformerSeq2Seq", "_decode_features"),
    "embeddings": ("heedful.nn.transformer", "TransformerSeq2Seq", "_embed"),
    "self-attention": ("heedful.nn.transformer", "SelfAttention", "forward"),
    "feed-forward": ("heedful.nn.transformer", "FeedForward", "forward"),
    "output layer + loss": ("heedful.nn.loss", "_LinearSmoothedCrossEntropy", "apply"),
}


def _timed(spent: dict[str, float], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="transformer", choices=["transformer", "rnn"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--updates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    retain_freed_memory()
    bound_kernel_caches()
    torch.set_num_threads(args.threads)
    import importlib

    from heedful.bench import _training_setup, bench_config
    from heedful.training.step import to_device

    spent: dict[str, float] = collections.defaultdict(float)
    for label, (module, cls, method) in MODULES.items():
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, method, _timed(spent, label, getattr(owner, method)))
    cpu = torch.device("cpu")
    runner, stream = _training_setup(bench_config(args.config), False, args.precision, cpu)
    for done in range(5):
        runner.train_step([next(stream)], done, 1.0)
    spent.clear()
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "grad norm": [],
                                      "optimizer": []}
    tokens = []
    params = [p for p in runner.model.parameters()]
    for _ in range(args.updates):
        batch = next(stream)
        runner.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = runner.loss_fn(to_device(batch, cpu))
        t1 = time.perf_counter()
        (loss / batch.num_tgt_tokens).backward()
        t2 = time.perf_counter()
        torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        t3 = time.perf_counter()
        runner.optimizer.step()
        t4 = time.perf_counter()
        for key, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases[key].append(seconds * 1e3)
        tokens.append(batch.num_tgt_tokens)
    print(json.dumps({
        "config": args.config, "precision": args.precision, "threads": args.threads,
        "cpu": cpu_name(), "torch": torch.__version__,
        "updates": args.updates, "target_tokens_per_update": round(statistics.mean(tokens)),
        "phase_ms_median": {k: round(statistics.median(v), 1) for k, v in phases.items()},
        "forward_module_ms_per_update": {k: round(v / args.updates * 1e3, 1)
                                         for k, v in spent.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
