"""Validation on the dev set: the mean token loss, and BLEU/chrF of greedy translations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from heedful.analysis.metrics import error_rates, score_corpus
from heedful.batching import plan_batches
from heedful.config import Config
from heedful.data import Corpus, make_batch
from heedful.decoding.translator import translator_for
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.sources import SourceReader, reader_for
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from heedful.training.step import loss_sum, to_device


@torch.inference_mode()
def dev_loss(model: Seq2SeqModel, tokenizer: Tokenizer, dev: Corpus, batch_tokens: int,
             image_reader: SourceReader | None = None) -> float:
    """Mean per-token cross-entropy (no smoothing) on the dev set; leaves the model in
    training mode. ``image_reader``: the dev sources are image paths, read with it."""
    model.eval()
    tgt = tokenizer.encode_tgt(dev.tgt)
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    if image_reader is None:
        src = tokenizer.encode_src(dev.src)
        sizes = [len(s) for s in src]
    else:  # dev sources are image paths
        images = [image_reader.read(path, f"{dev.origin} entry {n}")
                  for n, path in enumerate(dev.src, 1)]
        sizes = [image_reader.size(im) for im in images]
    for members in plan_batches(sizes, [len(t) for t in tgt], batch_tokens):
        targets = [tgt[i] for i in members]
        batch = to_device(
            make_batch([src[i] for i in members], targets, PAD_ID, BOS_ID, EOS_ID)
            if image_reader is None else
            image_reader.batch([images[i] for i in members], targets, PAD_ID, BOS_ID, EOS_ID),
            device)
        total += float(loss_sum(model, batch, 0.0))
        tokens += batch.num_tgt_tokens
    model.train()
    return total / max(tokens, 1)


@dataclass(frozen=True)
class DevScores:
    """One validation's figures."""

    loss: float
    """Mean per-token cross-entropy (no label smoothing)."""
    bleu: float
    chrf: float
    cer: float | None = None
    """Character error rate (0-1), for non-text sources (None for text)."""

    @property
    def ppl(self) -> float:
        """Perplexity, rounded to 2 decimals (capped at e^50)."""
        return round(math.exp(min(self.loss, 50)), 2)

    def value(self, metric: str) -> float:
        """The figure ``train.early_stopping_metric`` names (bleu, chrf, loss or cer)."""
        if metric == "cer":
            assert self.cer is not None, "the config check allows cer for non-text sources"
            return self.cer
        return {"bleu": self.bleu, "chrf": self.chrf, "loss": self.loss}[metric]


def score_dev(model: Seq2SeqModel, tokenizer: Tokenizer, dev: Corpus, cfg: Config) -> DevScores:
    """Dev loss (batches of ``train.batch_tokens``), then greedy translations of the dev
    sources scored against the references; leaves the model in training mode."""
    reader = None if cfg.data.source == "text" else reader_for(cfg)
    loss = dev_loss(model, tokenizer, dev, cfg.train.batch_tokens, reader)
    hyps = translator_for(model, tokenizer, cfg).translate_lines(dev.src, beam_size=1,
                                                                 n_best=1)
    model.train()
    scores = score_corpus(hyps, dev.tgt)
    cer = None if reader is None else error_rates(hyps, dev.tgt)["cer"]
    return DevScores(loss, scores.bleu, scores.chrf, cer)
