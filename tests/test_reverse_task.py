"""The synthetic reverse task data (learning it is tested per variant in test_variants_learn.py)."""

from __future__ import annotations

from heedful.synthetic import reverse_pairs


def test_reverse_pairs_are_reversed() -> None:
    src, tgt = reverse_pairs(10, 5, 20, 20, seed=0)
    for s, t in zip(src, tgt, strict=True):
        assert s[-1] == 3 and s[:-1][::-1] == t and 5 <= len(t) <= 20
