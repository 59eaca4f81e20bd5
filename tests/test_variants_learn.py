"""Every registered attention variant, the Transformer and ConvS2S learn the reverse task
(5-20)."""

from __future__ import annotations

import pytest

from heedful.nn.architectures import model_config
from heedful.nn.attention import ATTENTIONS, variant_options
from heedful.synthetic import train_reverse

# each variant's options from its registry entry; the local window widened to D = 8, so the
# predicted centre need not be exact for a 20-token reversal to be learnable in the budget
OPTIONS = {kind: variant_options(kind) for kind in ATTENTIONS}
OPTIONS["local"]["local_window"] = 8
ROWS = {kind: dict(rnn_type="gru", embed_dim=64, hidden_dim=128, attention=kind,
                   input_feeding=False, **OPTIONS[kind]) for kind in sorted(ATTENTIONS)}
ROWS["transformer"] = dict(arch="transformer", attention="multihead", attention_heads=4,
                           embed_dim=64, hidden_dim=64, ff_dim=256, encoder_layers=2,
                           decoder_layers=2, input_feeding=False)
ROWS["conv"] = dict(arch="conv", attention="dot", embed_dim=64, hidden_dim=64, encoder_layers=3,
                    decoder_layers=3, kernel_size=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROWS))
def test_variant_learns_reverse_task(name: str) -> None:
    cfg = model_config(dropout=0.0, **ROWS[name])
    lr = 1e-3 if name == "transformer" else 3e-3
    _, result = train_reverse(cfg, min_len=5, max_len=20, steps=3000, lr=lr)
    assert result.exact_match >= 0.99, result
