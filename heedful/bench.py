"""``heedful bench``: training and decoding speed on the two configurations the peers share.

The configurations (issue "Faster than the peers on the same machine"; the peers' harness in
``benchmarks/peers`` expresses the same two in Joey NMT and OpenNMT-py):

* ``rnn``: 1-layer bi-LSTM encoder 2x128, 1-layer LSTM decoder 256, embeddings 128, additive
  (Bahdanau/MLP) attention, input feeding, dropout 0.2;
* ``transformer``: 3+3 layers, d_model 256, 4 heads, feed-forward 1024, pre-norm, dropout 0.1,
  shared and tied embeddings;

both on bible-es-en with one joint 8,000-piece SentencePiece BPE vocabulary, batches of at
most 4,096 tokens counted as OpenNMT-py counts them (sentences x the longest side, padding
included), Adam at a constant 1e-3, label smoothing 0.1, gradient clipping 5 (RNN).

Training: ``warmup`` updates (not timed), then ``steps`` timed updates (forward, backward,
clipping, Adam); target tokens = real (non-padding) target subwords incl. EOS, as the peers
count them. Decoding (with ``--rnn-model`` / ``--transformer-model``): the bible-es-en test
set, greedy and beam 5, batch 64; output tokens = subwords written, EOS not counted (as the
peers' harness counts them). Each configuration runs in its own process, so peak RSS is that
configuration's alone.

``--device cuda`` measures the same on a GPU (autocast on that device; fp16 with the trainer's
loss scaling). Either way the FLOPs of one update are counted with
``torch.utils.flop_counter.FlopCounterMode`` (forward and backward) and reported per target
token with the FLOP/s achieved; on a GPU whose data-sheet peak is in :data:`PEAK_TFLOPS`, MFU
is that rate over the peak for the precision (null with the device's name elsewhere).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from heedful.config import Config
from heedful.errors import ConfigError
from heedful.presets import BENCH_CONFIGS, bench_config

if TYPE_CHECKING:
    from heedful.batching import BatchStream
    from heedful.data import Batch
    from heedful.training.step import StepRunner

PEAK_TFLOPS: dict[str, dict[str, float]] = {  # NVIDIA's H100/H200 data sheets
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.7},
    "H100 80GB HBM3": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.7},  # the SXM card's name
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.7},
}
"""Data-sheet dense (no sparsity) tensor-core peaks in TFLOP/s by precision, keyed by a part of
``torch.cuda.get_device_name``; fp32 is the TF32 peak (fp32 products on tensor cores, which
``torch.set_float32_matmul_precision("high")`` allows; without it fp32 runs far below)."""
MEASURED_CEILING_TFLOPS = 790.0
"""The bf16 dense matrix-product rate measured on an H200 (~790 TFLOP/s of the data sheet's
989): the fraction of it says how close training gets to what the card reaches in practice."""

__all__ = ["BENCH_CONFIGS", "MEASURED_CEILING_TFLOPS", "PEAK_TFLOPS", "bench_config",
           "bench_decoding", "bench_training", "count_step_flops", "format_table",
           "peak_rss_mb", "peak_tflops", "run_isolated", "run_one"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_training(config: Config, steps: int, warmup: int, compile_model: bool = False,
                   profile: str | None = None, precision: str = "fp32",
                   device: torch.device | None = None) -> dict[str, Any]:
    """Timed optimizer updates; see the module docstring for what is counted.

    Each update is the trainer's own :meth:`~heedful.training.step.StepRunner.train_step`,
    built from ``config`` as :class:`~heedful.training.trainer.Trainer` builds it (one
    process on ``device``, the CPU by default; no run directory); the clock runs from the
    drawn batches to the optimizer step (on a GPU, to the end of its work).

    ``precision``: ``fp32``, or ``bf16`` / ``fp16`` (GPU only) for autocast mixed precision
    (as ``train.precision``: products in the low precision, fp32 weights, optimizer and loss
    reductions). One more update, after the timed ones, is counted for FLOPs."""
    from heedful.runtime.precision import PRECISIONS, check_precision

    device = device or torch.device("cpu")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")
    check_precision(precision, device, key="--precision")
    from heedful.nn.architectures import count_parameters

    runner, stream = _training_setup(config, compile_model, precision, device)
    rates, times, tokens, padded = [], [], [], []

    def update(done: int) -> tuple[float, int, int]:
        """Update number ``done + 1``: (seconds, target tokens, padded tokens)."""
        drawn = [next(stream) for _ in range(config.train.accumulate)]
        start = time.perf_counter()
        stats = runner.train_step(drawn, done, 1.0)
        _synchronize(device)  # a GPU runs ahead of the host: time its work, not the launches
        elapsed = time.perf_counter() - start
        cost = sum(b.src.size(0) * max(b.src.size(1), b.tgt_in.size(1)) for b in drawn)
        return elapsed, stats.num_tokens, cost

    for done in range(warmup):
        update(done)
    for done in range(warmup, warmup + steps):
        elapsed, ntok, cost = update(done)
        rates.append(ntok / elapsed)
        times.append(elapsed)
        tokens.append(ntok)
        padded.append(cost)
    report: dict[str, Any] = {
        "parameters": count_parameters(runner.model),
        "train_steps_measured": steps,
        "train_precision": precision,
        "train_device": str(device),
        "train_tokens_per_s_median": round(statistics.median(rates)),
        "train_tokens_per_s_window": round(sum(tokens) / sum(times)),
        "train_step_s_median": round(statistics.median(times), 3),
        "train_target_tokens_per_step": round(statistics.mean(tokens)),
        "train_padded_tokens_per_step": round(statistics.mean(padded)),
    }
    if not compile_model:  # the counter sees eager operators, not a compiled graph
        drawn = [next(stream) for _ in range(config.train.accumulate)]
        flops = count_step_flops(runner, drawn, warmup + steps)
        per_token = flops / sum(b.num_tgt_tokens for b in drawn)
        report.update(utilization(per_token, sum(tokens) / sum(times), device, precision))
    report["train_peak_rss_mb"] = round(peak_rss_mb())
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with torch_profile(activities=activities, record_shapes=False) as prof:
            for done in range(warmup + steps + 1, warmup + steps + 6):
                update(done)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25)
        Path(profile).write_text(table + "\n", encoding="utf-8")
        report["profile"] = profile
    return report


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step_flops(runner: StepRunner, drawn: Sequence[Batch], done: int) -> int:
    """The FLOPs of one optimizer update on ``drawn`` (forward and backward), as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them: matrix products, convolutions
    and attention kernels (2 per multiply-add). Elementwise work and the optimizer are not
    counted, nor are fused recurrent kernels (cuDNN's LSTM/GRU on a GPU), so for the RNN
    on a GPU the figure is a lower bound. The update really happens (the model changes)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        runner.train_step(drawn, done, 1.0)
    return int(counter.get_total_flops())


def peak_tflops(device: torch.device, precision: str) -> tuple[str, float | None]:
    """(the device's name, its data-sheet dense peak for ``precision`` in TFLOP/s, or None
    where :data:`PEAK_TFLOPS` does not know the device: every CPU, an unlisted GPU)."""
    if device.type != "cuda":
        return device.type, None
    name = torch.cuda.get_device_name(device)
    for part, peaks in PEAK_TFLOPS.items():
        if part in name:
            return name, peaks[precision]
    return name, None


def utilization(flops_per_token: float, tokens_per_s: float, device: torch.device,
                precision: str) -> dict[str, Any]:
    """The report's FLOP figures: FLOPs per target token, the TFLOP/s achieved, and MFU
    (achieved / data-sheet peak; null where the peak is unknown), plus on an H200 in
    bf16/fp16 the fraction of :data:`MEASURED_CEILING_TFLOPS`."""
    achieved = flops_per_token * tokens_per_s / 1e12
    name, peak = peak_tflops(device, precision)
    ceiling = ("H200" in name and precision in ("bf16", "fp16"))
    return {"train_flops_per_token": round(flops_per_token),
            "train_tflops_per_s": round(achieved, 3),
            "device_name": name,
            "peak_tflops": peak,
            "mfu": None if peak is None else round(achieved / peak, 4),
            "fraction_of_measured_ceiling": (round(achieved / MEASURED_CEILING_TFLOPS, 4)
                                             if ceiling else None),
            # whether fp32 products may run as TF32 (the fp32 peak above assumes they do)
            "tf32": (torch.get_float32_matmul_precision() != "highest"
                     if device.type == "cuda" else None)}


def _training_setup(config: Config, compile_model: bool, precision: str,
                    device: torch.device) -> tuple[StepRunner, BatchStream]:
    """The trainer's step machinery and batch stream for ``config``, in this process on
    ``device`` (the tokenizer is trained into a temporary directory; batches are drawn on
    the CPU and moved by the step, as in training)."""
    from heedful.batching import BatchStream
    from heedful.nn.architectures import build_model
    from heedful.nn.seq2seq import Seq2SeqModel
    from heedful.store import TokenStore
    from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from heedful.training.distributed import DistContext
    from heedful.training.prepare import prepare_data
    from heedful.training.step import StepRunner, build_optimizer

    torch.manual_seed(config.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(config, Path(tmp))
        if not isinstance(data.store, TokenStore):
            raise ConfigError("the training benchmark reads text corpora (data.source: text)")
        # in memory: the store's files go with the temporary directory
        src, tgt = data.store.src.in_memory(), data.store.tgt.in_memory()
        order, sizes = np.array(data.store.order), np.array(data.store.sizes)
    tok = data.tokenizer
    model = build_model(config.model, tok.src_vocab_size, tok.tgt_vocab_size).to(device).train()
    # the compiled wrapper passes encode/decode through to the model it wraps
    forward = cast(Seq2SeqModel, torch.compile(model)) if compile_model else None
    runner = StepRunner(model, build_optimizer(model, config.train), config,
                        DistContext(device=device), precision=precision, forward=forward)
    stream = BatchStream(src, tgt, config.train.batch_tokens, config.train.seed, PAD_ID, BOS_ID,
                         EOS_ID, order=order, sizes=sizes)
    return runner, stream


def bench_decoding(model_dir: str, limit: int | None, quantize: str | None = None,
                   batch_size: int = 64, beam_stop: str = "top_finished",
                   device: torch.device | None = None) -> dict[str, Any]:
    """Greedy and beam-5 decoding of the bible-es-en test set with a trained model, in fp32
    on ``device`` (default the CPU; int8 ``quantize`` is CPU-only).

    ``beam_stop``: the beam search's stopping rule (``decode.beam_stop``); the default is
    the peers' rule, so both sides search equally far."""
    from heedful.analysis.metrics import score_corpus
    from heedful.data import load_split
    from heedful.decoding.translator import Translator

    device = device or torch.device("cpu")
    translator = Translator.from_checkpoint(model_dir, device=device)
    if quantize:
        translator.quantize(quantize)
    test = load_split(translator.config.data, "test")
    assert test is not None
    src, ref = test.src[:limit], test.tgt[:limit]
    out: dict[str, Any] = {"decode_model": model_dir, "decode_sentences": len(src),
                           "decode_quantize": quantize, "decode_beam_stop": beam_stop,
                           "decode_device": str(device)}
    for beam in (1, 5):
        options: dict[str, Any] = {"beam_size": beam, "batch_size": batch_size,
                                   "beam_stop": beam_stop}
        translator.translate(src[:16], **options)  # warm-up
        _synchronize(device)
        start = time.perf_counter()
        results = translator.translate(src, **options)  # ends with its outputs on the host
        seconds = time.perf_counter() - start
        written = sum(len([p for p in r.tgt_pieces if p != "</s>"]) for r in results)
        name = "greedy" if beam == 1 else f"beam{beam}"
        out[f"{name}_sentences_per_s"] = round(len(src) / seconds, 1)
        out[f"{name}_tokens_per_s"] = round(written / seconds)
        out[f"{name}_bleu"] = score_corpus([r.text for r in results], ref).bleu
        out[f"{name}_seconds"] = round(seconds, 2)
    out["decode_peak_rss_mb"] = round(peak_rss_mb())
    return out


def run_one(name: str, steps: int, warmup: int, threads: int, model: str | None,
            test_limit: int | None, quantize: str | None, compile_model: bool,
            profile: str | None, skip_training: bool, beam_stop: str = "top_finished",
            precision: str = "fp32", device: str = "cpu") -> dict[str, Any]:
    """One configuration measured in this process on ``device`` (a name for
    :func:`~heedful.runtime.device.resolve_device`)."""
    from heedful.runtime.device import resolve_device

    target = resolve_device(device)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from heedful.runtime.allocator import bound_kernel_caches, retain_freed_memory
    from heedful.runtime.gemm import cpu_gemm_backend

    report: dict[str, Any] = {"config": name, "threads": threads, "device": str(target),
                              "torch": torch.__version__,
                              "malloc": "retain" if retain_freed_memory() else "system",
                              "kernel_caches": bound_kernel_caches(),
                              "cpu_gemm": cpu_gemm_backend()}
    if not skip_training:
        report.update(bench_training(bench_config(name), steps, warmup, compile_model, profile,
                                     precision, target))
    if model:
        report.update(bench_decoding(model, test_limit, quantize, beam_stop=beam_stop,
                                     device=torch.device("cpu") if quantize else target))
    return report


def run_isolated(name: str, argv: list[str]) -> dict[str, Any]:
    """One configuration in a fresh process (its own peak RSS); returns its JSON report."""
    done = subprocess.run([sys.executable, "-m", "heedful", "bench", "--only", name, "--json",
                           *argv], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"heedful bench --only {name} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def format_table(reports: list[dict[str, Any]]) -> str:
    keys = [("parameters", "params"), ("train_tokens_per_s_median", "train tok/s (median)"),
            ("train_tokens_per_s_window", "train tok/s (window)"),
            ("train_step_s_median", "s/step"),
            ("train_target_tokens_per_step", "target tok/step"),
            ("train_flops_per_token", "FLOPs/tok"), ("mfu", "MFU"),
            ("train_peak_rss_mb", "train peak RSS MB"),
            ("greedy_sentences_per_s", "greedy sent/s"), ("greedy_tokens_per_s", "greedy tok/s"),
            ("greedy_bleu", "greedy BLEU"), ("beam5_sentences_per_s", "beam-5 sent/s"),
            ("beam5_tokens_per_s", "beam-5 tok/s"), ("beam5_bleu", "beam-5 BLEU"),
            ("decode_peak_rss_mb", "decode peak RSS MB")]
    present = [(k, label) for k, label in keys if any(k in r for r in reports)]
    lines = ["| config | " + " | ".join(label for _, label in present) + " |",
             "|---|" + "---:|" * len(present)]
    for r in reports:
        cells = [f"{r[k]:,}" if isinstance(r.get(k), int) else str(r.get(k, "–"))
                 for k, _ in present]
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
