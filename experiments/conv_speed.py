"""Training-step speed and arithmetic of a preset on real bible-es-en batches.

    python experiments/conv_speed.py PRESET RUN_DIR [fp32|bf16] [--profile]

RUN_DIR is a run of that preset's data and tokenizer (its prepared store is mapped, e.g.
``runs/conv/smoke``). Prints the median tokens/s of 20 updates (after 5 untimed), one thread
pool of 2, the optimizer step included, no validation; the forward + backward FLOPs per target
token over ten more (``torch.utils.flop_counter``) and the GFLOP/s that makes; with
``--profile`` the top operators of 8 more updates (``torch.profiler``). Run each figure in its
own process on a quiet machine (``HEEDFUL_CPU_GEMM=mkl`` for comparable runs).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from heedful.batching import BatchStream
from heedful.nn.architectures import build_model, count_parameters
from heedful.presets import get_preset
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
from heedful.training import distributed
from heedful.training.prepare import prepare_data
from heedful.training.step import StepRunner, build_optimizer


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--profile"]
    name, run = args[0], Path(args[1])
    precision = args[2] if len(args) > 2 else "fp32"
    torch.set_num_threads(2)
    cfg = get_preset(name)
    data = prepare_data(cfg, run, check=False)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size)
    model.train()
    runner = StepRunner(model, build_optimizer(model, cfg.train), cfg,
                        distributed.DistContext(), precision=precision)
    store = data.store
    stream = BatchStream(store.src, store.tgt, cfg.train.batch_tokens, 1, PAD_ID, BOS_ID,
                         EOS_ID, order=store.order, sizes=store.sizes)
    rates = []
    for i in range(25):
        batch = next(stream)
        start = time.perf_counter()
        runner.train_step([batch], i, 1.0)
        if i >= 5:
            rates.append(batch.num_tgt_tokens / (time.perf_counter() - start))
    flops = tokens = 0
    for i in range(10):
        batch = next(stream)
        with FlopCounterMode(display=False) as counter:
            runner.train_step([batch], 25 + i, 1.0)
        flops, tokens = flops + counter.get_total_flops(), tokens + batch.num_tgt_tokens
    rate = statistics.median(rates)
    print(f"{name} {precision}: {count_parameters(model):,} parameters, median {rate:,.0f} "
          f"tok/s, {flops / tokens / 1e6:.1f} MFLOP per target token, "
          f"{flops / tokens * rate / 1e9:.1f} GFLOP/s")
    if "--profile" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(8):
                runner.train_step([next(stream)], 35 + i, 1.0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
