"""The synthetic reverse task at lengths 5-40: attention vs no attention. Prints JSON.

    python benchmarks/reverse_task.py            # ~10 min on 2 CPU cores

Both models have the same size and training budget; the no-attention decoder sees only the
final encoder state (Sutskever/Cho), so its accuracy falls on long sequences.
"""

from __future__ import annotations

import argparse
import json

import torch

from heedful.nn.architectures import model_config
from heedful.synthetic import train_reverse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-len", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", nargs="+", default=["scaled_dot", "none"],
                        help="which variants to train (default: scaled_dot and none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {}
    for attention in args.attention:
        cfg = model_config(rnn_type="gru", embed_dim=64, hidden_dim=128, dropout=0.0,
                          attention=attention, input_feeding=False)
        _, result = train_reverse(cfg, min_len=args.min_len, max_len=args.max_len,
                                  steps=args.steps, num_train=40_000,
                                  target=0.99 if attention != "none" else None)
        report[attention] = result.__dict__
        print(attention, json.dumps(result.__dict__), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
