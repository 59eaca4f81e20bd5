"""``heedful quickstart``: train the quickstart preset on bible-es-en within a time budget,
then report test BLEU/chrF, a few translations beside their references, and a heatmap."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from heedful.analysis.metrics import score_corpus
from heedful.analysis.plots import plot_attention
from heedful.config import load_config
from heedful.data import load_split
from heedful.decoding.translator import Translator
from heedful.presets import get_preset
from heedful.training.trainer import train

EXAMPLES = (0, 7, 42)
"""Test verses shown beside their references."""


def quickstart(minutes: float = 15.0, run_dir: Path = Path("runs/quickstart"),
               progress: bool = True, test_limit: int | None = None) -> dict[str, object]:
    """Everything inside ``minutes`` of wall clock: the training budget is what remains
    after a reserve for the tokenizer and the test-set decode (measured: the tokenizer takes
    ~0.3 min, the test decode ~1 min)."""
    start = time.monotonic()
    reserve = min(2.0, 0.2 * minutes)  # tokenizer (~0.3 min) + test decode (~1 min)
    overrides = [f"train.max_minutes={max(minutes - reserve, 0.05):.3f}"]
    config = load_config(None, overrides, base=get_preset("quickstart"))
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a quickstart always starts fresh
    print(f"heedful quickstart: training the '{config.name}' preset on bible-es-en for "
          f"{minutes - reserve:.1f} of {minutes:.1f} minutes (run dir {run_dir})", flush=True)
    result = train(config, run_dir, progress=progress)
    if result.stop_signal is not None:  # SIGTERM / Ctrl-C: the checkpoint is saved, stop here
        print(f"stopped after {result.steps} steps; model so far in {run_dir}", flush=True)
        raise SystemExit(128 + result.stop_signal)
    # the test set decodes where the model trained (train.device: auto = the GPU if any)
    translator = Translator.from_checkpoint(run_dir, device=config.train.device)
    test = load_split(config.data, "test")
    assert test is not None
    src, ref = test.src[:test_limit], test.tgt[:test_limit]
    print(f"translating {len(src)} test verses (beam {config.decode.beam_size}) ...", flush=True)
    hyps = translator.translate_lines(src, progress=progress)
    scores = score_corpus(hyps, ref)
    print(f"\ntest BLEU {scores.bleu:.2f}  ({scores.bleu_signature})")
    print(f"test chrF {scores.chrf:.2f}  ({scores.chrf_signature})\n")
    for i in EXAMPLES:
        if i < len(src):
            print(f"  source     {src[i]}\n  reference  {ref[i]}\n  heedful    {hyps[i]}\n")
    example = translator.translate([src[0]], return_attention=True)[0]
    heatmap = run_dir / "attention.png"
    if example.attention is not None:
        plot_attention(example.attention[:, -1].mean(1).numpy(), example.src_pieces,
                       example.tgt_pieces, heatmap, title=example.text)
        print(f"attention heatmap: {heatmap}")
    elapsed = (time.monotonic() - start) / 60
    print(f"done in {elapsed:.1f} min: {result.steps} steps; model in {run_dir}\n"
          f"next: heedful translate {run_dir} < input.es")
    return {"bleu": scores.bleu, "chrf": scores.chrf, "steps": result.steps,
            "minutes": round(elapsed, 2), "heatmap": str(heatmap)}
