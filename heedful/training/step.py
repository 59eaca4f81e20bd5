"""One optimizer update, the part of training that ``heedful bench`` times.

:class:`StepRunner` holds what an update needs (the model, the optimizer, the loss as a
module that DDP wraps, the fp16 gradient scaler) and :meth:`StepRunner.train_step` does one
update: forward and backward over this rank's accumulated batches, gradient clipping, the
learning rate of the new step, the optimizer step.

How the loss is scaled (see also :mod:`heedful.training.distributed`): every rank draws the
same ``world_size x accumulate`` batches and trains on its own ``accumulate`` of them. Each
batch's summed loss is divided by the target-token count of *all* drawn batches and multiplied
by the world size, because DDP averages the ranks' gradients where the sum is wanted; so the
gradient is the per-token mean over the global batch, however unevenly the tokens fall.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import torch

from heedful.config import Config, TrainConfig
from heedful.data import Batch
from heedful.nn.attention import coverage_loss, guided_alignment_loss
from heedful.nn.loss import linear_smoothed_cross_entropy_sum, smoothed_cross_entropy_sum
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.runtime.gemm import cpu_gemm_backend
from heedful.runtime.precision import resolve_precision
from heedful.tokenizer import PAD_ID
from heedful.training import distributed
from heedful.training.schedule import learning_rate


@dataclass(frozen=True)
class GuidedAlignment:
    """Guided alignment's settings: the loss weight and the supervised layer and head
    (None: the mean over the layer's heads)."""

    weight: float
    layer: int
    head: int | None

    def select(self, attention: torch.Tensor) -> torch.Tensor:
        """(B, T, L, H, S) -> the supervised (B, T, S)."""
        a = attention[:, :, self.layer]
        return a.mean(2) if self.head is None else a[:, :, self.head]


def loss_sum(model: Seq2SeqModel, batch: Batch, label_smoothing: float,
             coverage_weight: float | None = None,
             guided: GuidedAlignment | None = None) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over real target tokens (padding ignored), plus
    ``coverage_weight`` x the coverage loss (See et al. 2017) when given, plus the guided
    alignment loss of the batch's links (``batch.align``) when ``guided`` is given, plus,
    in training, the model's joint CTC loss if it has one (``model.ctc_weight``)."""
    attention = None
    needs_weights = coverage_weight is not None or (guided is not None
                                                    and batch.align is not None)
    # joint CTC (model.ctc_weight, audio models) needs the encoder output; training only
    ctc_weight = getattr(model, "ctc_weight", None) if model.training else None
    if not needs_weights and ctc_weight is None and _fuses_output_layer(model):
        split = model.output_features(batch.src, batch.src_mask, batch.tgt_in)
        if split is not None:
            features, output = split
            return linear_smoothed_cross_entropy_sum(
                features.reshape(-1, features.size(-1)), output.weight, output.bias,
                batch.tgt_out.reshape(-1), label_smoothing, PAD_ID)
    encoded = None
    if not needs_weights and ctc_weight is None:
        logits = model(batch.src, batch.src_mask, batch.tgt_in)
    else:
        encoded = model.encode(batch.src, batch.src_mask)
        logits, attention, _ = model.decode(batch.tgt_in, model.init_state(encoded),
                                            need_weights=needs_weights)
    loss = smoothed_cross_entropy_sum(logits.reshape(-1, logits.size(-1)),
                                      batch.tgt_out.reshape(-1), label_smoothing, PAD_ID)
    if ctc_weight is not None:
        ctc_loss = getattr(model, "ctc_loss")  # noqa: B009 (an image/audio model's method)
        loss = loss + ctc_weight * ctc_loss(encoded, batch.tgt_out, batch.tgt_mask)
    if attention is not None and coverage_weight is not None:
        # (B, T, L, H, S) -> the last layer, averaged over heads: (B, T, S)
        loss = loss + coverage_weight * coverage_loss(attention[:, :, -1].mean(2), batch.tgt_mask)
    if attention is not None and guided is not None and batch.align is not None:
        loss = loss + guided.weight * guided_alignment_loss(guided.select(attention),
                                                            batch.align)
    return loss


def _fuses_output_layer(model: Seq2SeqModel) -> bool:
    """Whether the loss takes the fused output layer + cross-entropy path
    (:func:`~heedful.nn.loss.linear_smoothed_cross_entropy_sum`): on the CPU with MKL float32
    products or under bf16 autocast (oneDNN). Where heedful routes float32 linear layers to
    oneDNN (``HEEDFUL_CPU_GEMM``, AMD CPUs) the output layer keeps that faster route, and a
    ``torch.compile`` wrapper keeps its own graph."""
    if not isinstance(model, Seq2SeqModel):
        return False
    if torch.is_autocast_enabled("cpu"):
        return True
    return cpu_gemm_backend() == "mkl"


class LossModule(torch.nn.Module):
    """The training loss as a module, so DDP's forward (and its gradient hooks) wraps it.

    ``precision`` ``bf16`` / ``fp16`` runs the forward pass under autocast; ``coverage_weight``
    may be changed between steps (the coverage loss can join late); ``guided``: guided
    alignment's settings, if on."""

    def __init__(self, model: Seq2SeqModel, label_smoothing: float,
                 coverage_weight: float | None, precision: str, device: torch.device,
                 guided: GuidedAlignment | None = None) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing, self.coverage_weight = label_smoothing, coverage_weight
        self.guided = guided
        self.autocast = precision != "fp32"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        self.device_type = device.type

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.autocast):
            return loss_sum(self.model, batch, self.label_smoothing, self.coverage_weight,
                            self.guided)


def build_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam (``train.optimizer: adam``) or SGD with Nesterov momentum (``nag``) as ``train``
    configures it, with PyTorch's fused kernel: one pass over each parameter instead of one
    per operation (Adam, a 7.6 M-parameter step: 12-16 -> 4 ms on 2 CPU threads)."""
    if tc.optimizer == "nag":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum,
                               nesterov=True, weight_decay=tc.weight_decay, fused=True)
    return torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas,
                            weight_decay=tc.weight_decay, fused=True)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with its tensors on ``device`` (the batch itself on the CPU)."""
    if device.type == "cpu":
        return batch
    names = ("src", "src_mask", "tgt_in", "tgt_out", "tgt_mask",
             *(("align",) if batch.align is not None else ()))
    return replace(batch, **{k: getattr(batch, k).to(device, non_blocking=True) for k in names})


@dataclass(frozen=True)
class StepStats:
    """What one update reports."""

    loss_sum: torch.Tensor
    """This rank's summed training loss (a 0-d tensor on the training device, so reading it
    is the caller's choice of when to wait for the device: the trainer does once per log
    window; summed over the ranks there too)."""
    num_tokens: int
    """Target tokens in the global batch."""
    lr: float
    """The learning rate the update used."""
    grad_norm: torch.Tensor
    """The gradient's global L2 norm before clipping (0-d, on the training device, like
    ``loss_sum``; the same on every rank: DDP has averaged the gradients)."""


class StepRunner:
    """The machinery of one optimizer update, shared by the trainer and ``heedful bench``.

    ``precision`` overrides ``cfg.train.precision``; ``forward`` (the model itself unless
    given, e.g. a ``torch.compile`` of it) is what the loss calls. The model config is read
    for ``hidden_dim`` (the noam schedule's model size), the coverage loss settings and the
    guided alignment's layer and head only.
    """

    def __init__(self, model: Seq2SeqModel, optimizer: torch.optim.Optimizer, cfg: Config,
                 ctx: distributed.DistContext, precision: str | None = None,
                 forward: Seq2SeqModel | None = None) -> None:
        tc = cfg.train
        self.tc, self.ctx = tc, ctx
        self.model, self.optimizer = model, optimizer
        self.model_dim = cfg.model.hidden_dim
        self.coverage_weight = cfg.model.coverage_loss_weight
        self.coverage_from_step = cfg.model.coverage_loss_from_step
        precision = resolve_precision(precision or tc.precision, ctx.device)
        guided = (GuidedAlignment(tc.guided_alignment_weight, cfg.model.alignment_layer,
                                  cfg.model.alignment_head)
                  if tc.guided_alignment_weight is not None else None)
        self.loss_module = LossModule(model if forward is None else forward,
                                      tc.label_smoothing, self.coverage_weight, precision,
                                      ctx.device, guided)
        self.loss_fn = distributed.wrap(self.loss_module, ctx)  # DDP when distributed
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def train_step(self, drawn: Sequence[Batch], done: int, plateau_scale: float) -> StepStats:
        """One update after ``done`` updates, on this rank's share of ``drawn``: the
        ``world_size x accumulate`` batches every rank drew for it (see the module
        docstring). ``plateau_scale``: the plateau schedule's factor on the learning rate."""
        tc = self.tc
        ctx = self.ctx
        batches = drawn[ctx.rank * tc.accumulate : (ctx.rank + 1) * tc.accumulate]
        num_tokens = sum(b.num_tgt_tokens for b in drawn)  # the global count, known to all
        self.optimizer.zero_grad(set_to_none=True)
        if self.coverage_weight is not None:  # the coverage loss may join late
            self.loss_module.coverage_weight = (
                self.coverage_weight if done >= self.coverage_from_step else None)
        step_loss = self._forward_backward(batches, num_tokens)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
        if tc.clip_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])
        lr = learning_rate(tc, done + 1, plateau_scale, self.model_dim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return StepStats(step_loss, num_tokens, lr, grad_norm.detach())

    def _forward_backward(self, batches: Sequence[Batch], num_tokens: int) -> torch.Tensor:
        """Accumulate the gradients of ``batches``; returns their summed loss (0-d, on the
        device: no host synchronisation per batch)."""
        world = self.ctx.world_size
        step_loss = torch.zeros((), device=self.ctx.device)
        for k, b in enumerate(batches):
            sync = k == len(batches) - 1  # DDP all-reduces gradients on the last only
            with _maybe_no_sync(self.loss_fn, not sync):
                loss = self.loss_fn(to_device(b, self.ctx.device))
                # x world size: DDP averages the ranks' gradients, we want their sum
                scaled = loss * (world / num_tokens)
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            step_loss += loss.detach().float()
        return step_loss


def _maybe_no_sync(loss_fn: Any, skip: bool) -> AbstractContextManager[Any]:
    """DDP's ``no_sync()`` (no gradient all-reduce) for all but the last accumulated batch."""
    if skip and hasattr(loss_fn, "no_sync"):
        return loss_fn.no_sync()
    return contextlib.nullcontext()
