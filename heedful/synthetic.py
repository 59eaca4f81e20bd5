"""The synthetic reverse task: random token sequences -> the same tokens reversed.

The classic sanity check for attention (the output's first token depends on the input's last
one, which is hardest for a model that must squeeze the input into one vector). Used by the
tests (every architecture must learn it) and by ``benchmarks/reverse_task.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from heedful.batching import BatchStream
from heedful.data import make_batch
from heedful.decoding.search import greedy_search
from heedful.nn.architectures import build_model
from heedful.nn.model_config import ModelConfig
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
from heedful.training.step import loss_sum

NUM_SPECIAL = 4  # pad, unk, bos, eos


def reverse_pairs(num: int, min_len: int, max_len: int, num_symbols: int, seed: int
                  ) -> tuple[list[list[int]], list[list[int]]]:
    """``num`` (source + EOS, reversed target) id sequences over ``num_symbols`` symbols."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (num,), generator=gen).tolist()
    src, tgt = [], []
    for n in lengths:
        seq = (torch.randint(0, num_symbols, (n,), generator=gen) + NUM_SPECIAL).tolist()
        src.append([*seq, EOS_ID])
        tgt.append(seq[::-1])
    return src, tgt


@dataclass
class SyntheticResult:
    exact_match: float
    exact_match_by_length: dict[str, float]
    steps: int
    seconds: float


def exact_match(model: Seq2SeqModel, src: list[list[int]], tgt: list[list[int]],
                batch_size: int = 256) -> list[bool]:
    model.eval()
    hits = []
    for i in range(0, len(src), batch_size):
        batch = make_batch(src[i : i + batch_size], tgt[i : i + batch_size], PAD_ID, BOS_ID,
                           EOS_ID)
        caps = batch.src_mask.sum(1) + 5
        hyps = greedy_search(model, batch.src, batch.src_mask, caps)
        for h, ref in zip(hyps, tgt[i : i + batch_size], strict=True):
            hits.append(h[0].tokens == [*ref, EOS_ID])
    model.train()
    return hits


def train_reverse(model_cfg: ModelConfig, min_len: int = 5, max_len: int = 20,
                  num_symbols: int = 20, num_train: int = 20_000, num_test: int = 500,
                  steps: int = 1500, batch_tokens: int = 4096, lr: float = 3e-3,
                  seed: int = 1, target: float | None = 0.99, check_every: int = 250
                  ) -> tuple[Seq2SeqModel, SyntheticResult]:
    """Train ``model_cfg`` on the reverse task; stop early once held-out exact match reaches
    ``target``. Held-out sequences are generated with another seed."""
    torch.manual_seed(seed)
    vocab = num_symbols + NUM_SPECIAL
    model = build_model(model_cfg, vocab, vocab)
    train_src, train_tgt = reverse_pairs(num_train, min_len, max_len, num_symbols, seed)
    test_src, test_tgt = reverse_pairs(num_test, min_len, max_len, num_symbols, seed + 10_000)
    stream = BatchStream(train_src, train_tgt, batch_tokens, seed, PAD_ID, BOS_ID, EOS_ID)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.monotonic()
    step = 0
    hits: list[bool] = []
    while step < steps:
        batch = next(stream)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_sum(model, batch, 0.0, model_cfg.coverage_loss_weight)
        (loss / batch.num_tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        step += 1
        if target is not None and step % check_every == 0:
            hits = exact_match(model, test_src, test_tgt)
            if sum(hits) / len(hits) >= target:
                break
    if not hits or step % check_every:
        hits = exact_match(model, test_src, test_tgt)
    by_length: dict[str, list[bool]] = {}
    width = max(1, (max_len - min_len + 1) // 4)
    for s, hit in zip(test_src, hits, strict=True):
        lo = min_len + ((len(s) - 1 - min_len) // width) * width
        by_length.setdefault(f"{lo}-{min(lo + width - 1, max_len)}", []).append(hit)
    return model, SyntheticResult(
        exact_match=sum(hits) / len(hits),
        exact_match_by_length={k: round(sum(v) / len(v), 4) for k, v in sorted(
            by_length.items(), key=lambda kv: int(kv[0].split("-")[0]))},
        steps=step,
        seconds=round(time.monotonic() - start, 1),
    )
