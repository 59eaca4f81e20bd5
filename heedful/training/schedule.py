"""Learning-rate schedules: a pure function of the step, plus the plateau schedule's state.

Exact resume relies on this purity: the rate at step ``s`` depends on nothing but ``s``, the
config and the plateau state, which every checkpoint saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heedful.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, plateau_scale: float, model_dim: int) -> float:
    """The learning rate for optimizer step ``step`` (1-based).

    ``noam``: ``lr x model_dim^-0.5 x min(step^-0.5, step x warmup^-1.5)``; the others warm up
    linearly over ``warmup_steps``, then ``inverse_sqrt`` decays as ``sqrt(warmup / step)``,
    ``plateau`` multiplies by ``plateau_scale`` (never below ``min_lr``) and ``constant``
    stays.
    """
    warm = cfg.warmup_steps
    if cfg.schedule == "noam":
        return cfg.lr * model_dim ** -0.5 * min(step ** -0.5, step * warm ** -1.5)
    scale = min(1.0, step / warm) if warm else 1.0
    if cfg.schedule == "inverse_sqrt":
        scale = min(scale, math.sqrt(warm / step)) if warm else 1.0 / math.sqrt(step)
    if cfg.schedule == "plateau":
        scale *= plateau_scale
    return max(cfg.lr * scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


@dataclass(frozen=True)
class Plateau:
    """The plateau schedule's memory (saved as the trainer state's ``plateau_*`` fields)."""

    scale: float = 1.0
    """The factor on the learning rate."""
    best: float | None = None
    """The best validation value seen."""
    bad: int = 0
    """Validations since ``best`` improved."""


def plateau_update(cfg: TrainConfig, plateau: Plateau, value: float,
                   higher_better: bool) -> Plateau:
    """The plateau state after a validation that scored ``value``.

    An improvement resets the count; more than ``plateau_patience`` validations without one
    multiply the scale by ``plateau_factor`` (and reset the count). Any other schedule keeps
    ``plateau`` as it is.
    """
    if cfg.schedule != "plateau":
        return plateau
    best = plateau.best
    if best is None or (value > best if higher_better else value < best):
        return Plateau(plateau.scale, value, 0)
    if plateau.bad + 1 > cfg.plateau_patience:
        return Plateau(plateau.scale * cfg.plateau_factor, best, 0)
    return Plateau(plateau.scale, best, plateau.bad + 1)
