"""heedful vs its CTranslate2 export on the bible-es-en test set: greedy agreement and speed.

    python benchmarks/ctranslate2_compare.py RUN_DIR [--threads 2] [--limit N]

Exports the (Transformer) run to CTranslate2 in a temporary directory, translates the test
set greedily with both (the same per-sentence output cap, CTranslate2 called once per cap
value) and prints JSON: the share of identical outputs and each one's BLEU; then times one
call each over the whole test set with one uniform cap (``--speed-cap``), for the speed
ratio (sentences/s and output tokens/s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--speed-cap", type=int, default=100,
                        help="the uniform output cap of the speed runs")
    args = parser.parse_args()
    import ctranslate2

    from heedful.analysis.metrics import score_corpus
    from heedful.data import load_split
    from heedful.decoding.translator import Translator, resolve_run_dir
    from heedful.serving.ctranslate2 import ct2_source_tokens, export_ctranslate2

    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.run_dir)
    test = load_split(translator.config.data, "test")
    assert test is not None
    src, ref = test.src[: args.limit], test.tgt[: args.limit]
    start = time.perf_counter()
    ours = [r.text for r in translator.translate(src, beam_size=1)]
    ours_s = time.perf_counter() - start
    opts = translator.decode_options()
    with tempfile.TemporaryDirectory() as tmp:
        out = export_ctranslate2(resolve_run_dir(args.run_dir), Path(tmp) / "ct2")
        engine = ctranslate2.Translator(str(out), device="cpu", intra_threads=args.threads)
        tokens = ct2_source_tokens(translator.tokenizer, src)
        # group sentences by their output cap so each batch shares heedful's per-sentence cap
        caps = [int(opts.max_len_a * (len(t) - 1)) + opts.max_len_b for t in tokens]
        theirs = [""] * len(src)
        start = time.perf_counter()
        for cap in sorted(set(caps)):
            idx = [i for i, c in enumerate(caps) if c == cap]
            results = engine.translate_batch([tokens[i] for i in idx], beam_size=1,
                                             max_decoding_length=cap, max_batch_size=64)
            for i, r in zip(idx, results, strict=True):
                theirs[i] = translator.tokenizer.tgt.decode(r.hypotheses[0])
        ct2_s = time.perf_counter() - start
        # speed: one call each with the same uniform cap (per-cap groups above are many
        # small batches, which would measure the grouping rather than the engine)
        cap = args.speed_cap
        start = time.perf_counter()
        ours_u = translator.translate(src, beam_size=1, max_len_a=1e-9, max_len_b=cap)
        ours_u_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs_u = engine.translate_batch(tokens, beam_size=1, max_decoding_length=cap,
                                          max_batch_size=64)
        ct2_u_s = time.perf_counter() - start
        ours_tok = sum(r.num_tokens for r in ours_u)
        theirs_tok = sum(len(r.hypotheses[0]) for r in theirs_u)
    report = {
        "run": args.run_dir, "sentences": len(src), "threads": args.threads,
        "agreement": round(sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(src), 4),
        "heedful_sentences_per_s": round(len(src) / ours_s, 1),
        "ctranslate2_sentences_per_s": round(len(src) / ct2_s, 1),
        "uniform_cap": cap,
        "heedful_uniform_cap_sentences_per_s": round(len(src) / ours_u_s, 1),
        "ctranslate2_uniform_cap_sentences_per_s": round(len(src) / ct2_u_s, 1),
        "heedful_uniform_cap_tokens_per_s": round(ours_tok / ours_u_s),
        "ctranslate2_uniform_cap_tokens_per_s": round(theirs_tok / ct2_u_s),
        "speed_ratio_ct2_over_heedful": round(ours_u_s / ct2_u_s, 2),
        "heedful_bleu": score_corpus(ours, ref).bleu,
        "ctranslate2_bleu": score_corpus(theirs, ref).bleu,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
