"""Where decoding time goes: PyTorch's profiler over one translate() of the first N test verses.

    python benchmarks/profile_decode.py RUN_DIR [--sentences 128] [--beam 5] [--threads 2]
        [--device cpu] [--precision fp32] > docs/profile_decode.transformer

Prints the profiler's table of operators by self CPU time (by self CUDA time on a GPU) after
one untimed warm-up batch, with the peers' beam stopping rule, batch 64, as ``heedful bench``
decodes.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from heedful.data import load_split
from heedful.decoding.translator import Translator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25, help="operators listed")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    translator = Translator.from_checkpoint(args.run_dir, device=args.device,
                                            precision=args.precision)
    on_gpu = translator.device.type == "cuda"
    test = load_split(translator.config.data, "test")
    assert test is not None
    src = test.src[: args.sentences]
    options = {"beam_size": args.beam, "batch_size": 64, "beam_stop": "top_finished"}
    translator.translate(src[:16], **options)  # warm-up
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with profile(activities=activities) as prof:
        translator.translate(src, **options)
    sort = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
