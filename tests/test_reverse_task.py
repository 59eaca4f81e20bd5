"""The attention model learns the synthetic reverse task (lengths 5-20) to >= 99%."""

from __future__ import annotations

import pytest

from heedful.config import ModelConfig
from heedful.synthetic import reverse_pairs, train_reverse


def test_reverse_pairs_are_reversed() -> None:
    src, tgt = reverse_pairs(10, 5, 20, 20, seed=0)
    for s, t in zip(src, tgt, strict=True):
        assert s[-1] == 3 and s[:-1][::-1] == t and 5 <= len(t) <= 20


@pytest.mark.slow
def test_attention_model_learns_reverse_task() -> None:
    cfg = ModelConfig(rnn_type="gru", embed_dim=64, hidden_dim=128, dropout=0.0,
                      attention="scaled_dot", input_feeding=False)
    _, result = train_reverse(cfg, min_len=5, max_len=20, steps=2000)
    assert result.exact_match >= 0.99, result
