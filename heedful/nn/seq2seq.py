"""The base class of every architecture's model: the contract training and decoding rely on.

* ``encode(src (B, S), src_mask (B, S) bool) -> encoder output`` (architecture-specific)
* ``init_state(encoder_output) -> state`` (a state implements ``select(index)``, see
  :mod:`heedful.decoding.search`)
* ``decode(tgt_in (B, T), state, need_weights) -> (logits (B, T, V), attention
  (B, T, L, H, S) or None, state)``; ``step`` (one token, from :class:`StepFromDecode`) is
  what greedy, beam and sampling search call
* ``forward(src, src_mask, tgt_in) -> logits (B, T, V)``: the teacher-forced pass for training;
* ``encode_embedded(vectors (B, S, E), src_mask (B, S))``: ``encode`` from source vectors
  that a non-text front end computed (:mod:`heedful.vision`) instead of token embeddings;
  ``decoder_features(tgt_in, state)``: the teacher-forced decoder pass up to the output layer
  (None where the logits are more than one linear map of it);
* ``output_features(src, src_mask, tgt_in) -> (features (B, T, D), output layer) or None``:
  the same pass stopped before the output layer, for a loss that fuses that layer with the
  cross-entropy (:func:`heedful.nn.loss.linear_smoothed_cross_entropy_sum`); None where the
  logits are more than one linear map of the features.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from heedful.decoding.search import StepFromDecode


class Seq2SeqModel(StepFromDecode, nn.Module):
    """An encoder-decoder; subclasses implement ``encode``, ``init_state`` and ``decode``."""

    def encode(self, src: Tensor, src_mask: Tensor) -> Any:
        raise NotImplementedError

    def init_state(self, encoder_output: Any) -> Any:
        raise NotImplementedError

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V)."""
        logits, _, _ = self.decode(tgt_in, self.init_state(self.encode(src, src_mask)))
        return logits

    def encode_embedded(self, vectors: Tensor, src_mask: Tensor) -> Any:
        """The encoder over source vectors (B, S, E) given by a front end (positions
        included) instead of the token embeddings; architectures without it refuse."""
        raise NotImplementedError(f"{type(self).__name__} reads token ids only")

    def decoder_features(self, tgt_in: Tensor, state: Any) -> tuple[Tensor, nn.Linear] | None:
        """The teacher-forced decoder features (B, T, D) from ``state`` and the output layer
        that maps them to the logits; None (the default) where there is no such split."""
        return None

    def output_features(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor
                        ) -> tuple[Tensor, nn.Linear] | None:
        """Teacher-forced features (B, T, D) and the output layer with
        ``forward(...) == output(features)``; None where there is no such split."""
        return self.decoder_features(tgt_in, self.init_state(self.encode(src, src_mask)))
