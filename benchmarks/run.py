"""Speed benchmark: training target tokens/s, greedy and beam-5 decoding on the test set,
peak RSS. Prints one JSON object (and a table on stderr).

    python benchmarks/run.py --preset quickstart --model bible-es-en
    python benchmarks/run.py --config configs/bible-es-en.yaml --steps 30

Training: ``--steps`` optimizer updates after ``--warmup`` (not timed) on bible-es-en with
the config's batching; tokens/s = real (non-padding) target tokens incl. EOS per second,
median over the measured steps. Decoding: the ``--model`` run directory (or shipped model)
translates the bible-es-en test set (``--test-limit`` sentences) greedily and with beam 5.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from heedful.config import load_config
from heedful.data import BatchStream, load_split
from heedful.model import build_model, count_parameters
from heedful.presets import get_preset
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
from heedful.train import loss_sum, prepare_data
from heedful.translator import Translator


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_training(config, steps: int, warmup: int) -> dict[str, object]:
    torch.manual_seed(config.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(config, Path(tmp))
    tok = data.tokenizer
    model = build_model(config.model, tok.src_vocab_size, tok.tgt_vocab_size).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    stream = BatchStream(data.train_src, data.train_tgt, config.train.batch_tokens,
                         config.train.seed, PAD_ID, BOS_ID, EOS_ID)
    rates, times, tokens = [], [], []
    for i in range(warmup + steps):
        batch = next(stream)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        (loss_sum(model, batch, config.train.label_smoothing) / batch.num_tgt_tokens).backward()
        if config.train.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_norm)
        opt.step()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            rates.append(batch.num_tgt_tokens / elapsed)
            times.append(elapsed)
            tokens.append(batch.num_tgt_tokens)
    return {"parameters": count_parameters(model),
            "train_tokens_per_s_median": round(statistics.median(rates)),
            "train_tokens_per_s_window": round(sum(tokens) / sum(times)),
            "train_step_s_median": round(statistics.median(times), 3),
            "train_target_tokens_per_step": round(statistics.mean(tokens)),
            "train_peak_rss_mb": round(peak_rss_mb())}


def bench_decoding(model_dir: str, limit: int | None) -> dict[str, object]:
    from heedful.evaluate import score_corpus

    translator = Translator.from_checkpoint(model_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None
    src, ref = test.src[:limit], test.tgt[:limit]
    out: dict[str, object] = {"decode_model": model_dir, "decode_sentences": len(src)}
    for beam in (1, 5):
        translator.translate(src[:16], beam_size=beam)  # warm-up
        start = time.perf_counter()
        results = translator.translate(src, beam_size=beam)
        seconds = time.perf_counter() - start
        ntok = sum(r.num_tokens for r in results)
        out[f"beam{beam}_sentences_per_s"] = round(len(src) / seconds, 1)
        out[f"beam{beam}_tokens_per_s"] = round(ntok / seconds)
        out[f"beam{beam}_bleu"] = score_corpus([r.text for r in results], ref).bleu
    out["decode_peak_rss_mb"] = round(peak_rss_mb())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--model", help="run dir or shipped model for the decoding figures")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = get_preset(args.preset) if args.preset else None
    config = load_config(args.config, base=base)
    report: dict[str, object] = {"config": args.config or args.preset or "defaults",
                                 "threads": args.threads, "torch": torch.__version__}
    if not args.skip_training:
        report.update(bench_training(config, args.steps, args.warmup))
    if args.model:
        report.update(bench_decoding(args.model, args.test_limit))
    for key, value in report.items():
        print(f"{key:32s} {value}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
