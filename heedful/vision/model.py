"""An image-reading model: the image encoder in front of an architecture's own encoder and
decoder.

:class:`ImageToText` is a :class:`~heedful.nn.seq2seq.Seq2SeqModel` like any other — the
same decoding protocol, so greedy, beam and sampling search, attention extraction, the
trainer and the checkpoints work unchanged. Its ``encode`` runs the CNN
(:class:`~heedful.vision.encoder.ImageEncoder`), whose memory slots take the place of the
token embeddings in the wrapped model's ``encode_embedded``: for ``arch: rnn`` the
bidirectional LSTM then reads the slots in column-major order (a row encoder over the grid,
as im2markup's), for ``arch: transformer`` the self-attention layers do. Decoding is the
wrapped model's, so attention over the S slots comes back as (B, T, L, H, S), and
:meth:`ImageEncoder.slot_boxes` places each slot on the picture.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from heedful.audio.encoder import AudioEncoder
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.tokenizer import PAD_ID
from heedful.vision.encoder import ImageEncoder


class ImageToText(Seq2SeqModel):
    """``frontend`` (images or audio features -> slot vectors) + ``text`` (the
    architecture's model, whose token embedding of the source is removed: it would never be
    trained)."""

    def __init__(self, frontend: ImageEncoder | AudioEncoder, text: Seq2SeqModel) -> None:
        super().__init__()
        if hasattr(text, "src_embed"):
            del text.src_embed  # an unused parameter would also stall DDP's gradient sync
        self.frontend, self.text = frontend, text

    ctc_weight: float | None = None
    """The joint CTC loss's weight (``model.ctc_weight``), once :meth:`add_ctc` was called."""

    def add_ctc(self, memory_dim: int, vocab_size: int, weight: float) -> None:
        """A CTC output layer over the encoder's memory (``model.ctc_weight``); the blank is
        the padding id, which is never a target."""
        self.ctc_head = nn.Linear(memory_dim, vocab_size)
        self.ctc_weight = weight

    def ctc_loss(self, encoded: Any, tgt_out: Tensor, tgt_mask: Tensor) -> Tensor:
        """The summed CTC loss of the targets (B, T) (ending with EOS, which CTC leaves out)
        given the encoder output's memory (B, S, D) and mask (B, S)."""
        log_probs = nn.functional.log_softmax(self.ctc_head(encoded.memory).float(), dim=-1)
        return nn.functional.ctc_loss(
            log_probs.transpose(0, 1), tgt_out, encoded.src_mask.sum(1),
            tgt_mask.sum(1) - 1, blank=PAD_ID, reduction="sum", zero_infinity=True)

    def encode(self, src: Tensor, src_mask: Tensor) -> Any:
        """src (B, 1, H, W) uint8 images, src_mask (B, W) their columns -> the wrapped
        model's encoder output over the (B, S) memory slots."""
        vectors, slot_mask = self.frontend(src, src_mask)
        return self.text.encode_embedded(vectors, slot_mask)

    def init_state(self, encoder_output: Any) -> Any:
        return self.text.init_state(encoder_output)

    def decode(self, tgt_in: Tensor, state: Any, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, Any]:
        return self.text.decode(tgt_in, state, need_weights)

    def decoder_features(self, tgt_in: Tensor, state: Any) -> tuple[Tensor, nn.Linear] | None:
        return self.text.decoder_features(tgt_in, state)
