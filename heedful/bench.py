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
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from heedful.config import Config
from heedful.presets import BENCH_CONFIGS, bench_config

if TYPE_CHECKING:
    from heedful.batching import BatchStream
    from heedful.training.step import StepRunner

__all__ = ["BENCH_CONFIGS", "bench_config", "bench_decoding", "bench_training", "format_table",
           "peak_rss_mb", "run_isolated", "run_one"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_training(config: Config, steps: int, warmup: int, compile_model: bool = False,
                   profile: str | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Timed optimizer updates; see the module docstring for what is counted.

    Each update is the trainer's own :meth:`~heedful.training.step.StepRunner.train_step`,
    built from ``config`` as :class:`~heedful.training.trainer.Trainer` builds it (one
    process, on the CPU; no run directory); the clock runs from the drawn batches to the
    optimizer step.

    ``precision``: ``fp32``, or ``bf16`` for autocast mixed precision (as ``train.precision``:
    bf16 matrix products, fp32 weights, optimizer and loss reductions)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    from heedful.runtime.precision import check_cpu_precision

    check_cpu_precision(precision, key="--precision")
    from heedful.nn.architectures import count_parameters

    runner, stream = _training_setup(config, compile_model, precision)
    rates, times, tokens, padded = [], [], [], []

    def update(done: int) -> tuple[float, int, int]:
        """Update number ``done + 1``: (seconds, target tokens, padded tokens)."""
        drawn = [next(stream) for _ in range(config.train.accumulate)]
        start = time.perf_counter()
        stats = runner.train_step(drawn, done, 1.0)
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
        "train_tokens_per_s_median": round(statistics.median(rates)),
        "train_tokens_per_s_window": round(sum(tokens) / sum(times)),
        "train_step_s_median": round(statistics.median(times), 3),
        "train_target_tokens_per_step": round(statistics.mean(tokens)),
        "train_padded_tokens_per_step": round(statistics.mean(padded)),
        "train_peak_rss_mb": round(peak_rss_mb()),
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for done in range(warmup + steps, warmup + steps + 5):
                update(done)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        Path(profile).write_text(table + "\n", encoding="utf-8")
        report["profile"] = profile
    return report


def _training_setup(config: Config, compile_model: bool, precision: str
                    ) -> tuple[StepRunner, BatchStream]:
    """The trainer's step machinery and batch stream for ``config``, in this process on the
    CPU (the tokenizer is trained into a temporary directory)."""
    from heedful.batching import BatchStream
    from heedful.nn.architectures import build_model
    from heedful.nn.seq2seq import Seq2SeqModel
    from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from heedful.training.distributed import DistContext
    from heedful.training.prepare import prepare_data
    from heedful.training.step import StepRunner, build_optimizer

    torch.manual_seed(config.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(config, Path(tmp))
        # in memory: the store's files go with the temporary directory
        src, tgt = data.store.src.in_memory(), data.store.tgt.in_memory()
        order, sizes = np.array(data.store.order), np.array(data.store.sizes)
    tok = data.tokenizer
    model = build_model(config.model, tok.src_vocab_size, tok.tgt_vocab_size).train()
    # the compiled wrapper passes encode/decode through to the model it wraps
    forward = cast(Seq2SeqModel, torch.compile(model)) if compile_model else None
    runner = StepRunner(model, build_optimizer(model, config.train), config, DistContext(),
                        precision=precision, forward=forward)
    stream = BatchStream(src, tgt, config.train.batch_tokens, config.train.seed, PAD_ID, BOS_ID,
                         EOS_ID, order=order, sizes=sizes)
    return runner, stream


def bench_decoding(model_dir: str, limit: int | None, quantize: str | None = None,
                   batch_size: int = 64, beam_stop: str = "top_finished") -> dict[str, Any]:
    """Greedy and beam-5 decoding of the bible-es-en test set with a trained model.

    ``beam_stop``: the beam search's stopping rule (``decode.beam_stop``); the default is
    the peers' rule, so both sides search equally far."""
    from heedful.analysis.metrics import score_corpus
    from heedful.data import load_split
    from heedful.decoding.translator import Translator

    translator = Translator.from_checkpoint(model_dir)
    if quantize:
        translator.quantize(quantize)
    test = load_split(translator.config.data, "test")
    assert test is not None
    src, ref = test.src[:limit], test.tgt[:limit]
    out: dict[str, Any] = {"decode_model": model_dir, "decode_sentences": len(src),
                           "decode_quantize": quantize, "decode_beam_stop": beam_stop}
    for beam in (1, 5):
        options: dict[str, Any] = {"beam_size": beam, "batch_size": batch_size,
                                   "beam_stop": beam_stop}
        translator.translate(src[:16], **options)  # warm-up
        start = time.perf_counter()
        results = translator.translate(src, **options)
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
            precision: str = "fp32") -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from heedful.runtime.allocator import bound_kernel_caches, retain_freed_memory
    from heedful.runtime.gemm import cpu_gemm_backend

    report: dict[str, Any] = {"config": name, "threads": threads, "torch": torch.__version__,
                              "malloc": "retain" if retain_freed_memory() else "system",
                              "kernel_caches": bound_kernel_caches(),
                              "cpu_gemm": cpu_gemm_backend()}
    if not skip_training:
        report.update(bench_training(bench_config(name), steps, warmup, compile_model, profile,
                                     precision))
    if model:
        report.update(bench_decoding(model, test_limit, quantize, beam_stop=beam_stop))
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
