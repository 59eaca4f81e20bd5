"""Ensembles: several compatible models decoded as one.

At each step every model scores the next token and the ensemble's log-probabilities are the
*mean of the members' log-probabilities*, renormalised (a normalised geometric mean of the
distributions, as OpenNMT-py averages its members' log-probabilities). Members must share the
target vocabulary (identical tokenizers); each keeps its own encoder output and decoder state.
Attention (for heatmaps) is the first member's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from heedful.decoding.search import reorder_beams, repeat_rows
from heedful.nn.seq2seq import Seq2SeqModel


@dataclass
class EnsembleState:
    states: list[Any]

    def select(self, index: Tensor) -> EnsembleState:
        return EnsembleState([s.select(index) for s in self.states])

    def repeat_rows(self, n: int, k: int) -> EnsembleState:
        return EnsembleState([repeat_rows(s, n, k) for s in self.states])

    def reorder_beams(self, rows: Tensor, sentences: Tensor | None) -> EnsembleState:
        return EnsembleState([reorder_beams(s, rows, sentences) for s in self.states])


class Ensemble(Seq2SeqModel):
    """The decoding protocol (encode / init_state / step, and decode for forced decoding)
    over several member models."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        self.members = nn.ModuleList(members)  # registered: .eval(), .to() reach them all
        self._models: list[Any] = list(members)  # the same modules, typed for the protocol

    def encode(self, src: Tensor, src_mask: Tensor) -> list[Any]:
        return [m.encode(src, src_mask) for m in self._models]

    def init_state(self, encoder_outputs: list[Any]) -> EnsembleState:
        return EnsembleState([m.init_state(e) for m, e in
                              zip(self._models, encoder_outputs, strict=True)])

    def step(self, prev_tokens: Tensor, state: EnsembleState, need_weights: bool = False
             ) -> tuple[Tensor, EnsembleState, Tensor | None]:
        """prev_tokens (B,) -> log-probs (B, V), state, first member's attention or None."""
        log_probs, states, attention = [], [], None
        for k, (m, s) in enumerate(zip(self._models, state.states, strict=True)):
            lp, s, att = m.step(prev_tokens, s, need_weights and k == 0)
            log_probs.append(lp)
            states.append(s)
            if k == 0:
                attention = att
        mean = torch.stack(log_probs).mean(0)
        return torch.log_softmax(mean, -1), EnsembleState(states), attention

    def decode(self, tgt_in: Tensor, state: EnsembleState, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None, EnsembleState]:
        """Teacher-forced: tgt_in (B, T) -> log-probs (B, T, V), first member's attention."""
        log_probs, states, attention = [], [], None
        for k, (m, s) in enumerate(zip(self._models, state.states, strict=True)):
            logits, att, s = m.decode(tgt_in, s, need_weights and k == 0)
            log_probs.append(torch.log_softmax(logits.float(), -1))
            states.append(s)
            if k == 0:
                attention = att
        mean = torch.stack(log_probs).mean(0)
        return torch.log_softmax(mean, -1), attention, EnsembleState(states)
