"""What a checkpoint remembers about the training run, besides weights and optimizer.

:class:`TrainerState` is written as ``trainer_state.json`` (by
:func:`heedful.checkpoint.save_checkpoint`, from ``dataclasses.asdict``): its field names and
order are that file's keys (read back by name), so renaming or dropping a field breaks the
resume of every run saved before. A new field needs a default, so that older files still load.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from heedful.training.schedule import Plateau


@dataclass
class TrainerState:
    """The run's progress: enough, with the weights and the optimizer, to resume exactly."""

    step: int = 0
    """Optimizer updates done."""
    epoch: int = 0
    """The batch stream's position: the epoch ..."""
    index: int = 0
    """... and the next batch's index within it."""
    best_score: float | None = None
    """The best validation value of ``train.early_stopping_metric`` so far."""
    best_step: int | None = None
    """The step that scored ``best_score``."""
    bad_validations: int = 0
    """Validations since the last improvement (early stopping's count)."""
    plateau_scale: float = 1.0
    """The plateau schedule's learning-rate factor."""
    plateau_best: float | None = None
    """The plateau schedule's best validation value."""
    plateau_bad: int = 0
    """Validations since the plateau schedule's last improvement."""
    train_seconds: float = 0.0
    """Wall-clock seconds trained over all sittings (the time budget is a total)."""
    rng_torch: str | None = None
    """torch's global (CPU) generator state, base64 (set on every save; dropout masks
    resume)."""
    rng_cuda: list[str] | None = None
    """Each CUDA device's generator state, base64, where CUDA was in use (dropout on a GPU
    draws from these, not from the CPU generator)."""

    @property
    def plateau(self) -> Plateau:
        """The plateau schedule's fields as one value."""
        return Plateau(self.plateau_scale, self.plateau_best, self.plateau_bad)

    @plateau.setter
    def plateau(self, plateau: Plateau) -> None:
        self.plateau_scale, self.plateau_best, self.plateau_bad = (
            plateau.scale, plateau.best, plateau.bad)

    def to_json(self) -> dict[str, Any]:
        """The ``trainer_state.json`` record (before the checkpoint adds its own keys)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> TrainerState:
        """The state a ``trainer_state.json`` record holds. Keys this class does not know
        (``format_version``, ``optimizer_param_groups``, anything a later heedful adds) are
        ignored; missing ones keep their defaults, so any checkpoint written so far loads."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


def _encode(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode()


def _decode(encoded: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(encoded)), dtype=torch.uint8)


def capture_rng() -> str:
    """torch's global (CPU) generator state as base64 text (a JSON value)."""
    return _encode(torch.get_rng_state())


def capture_cuda_rng() -> list[str] | None:
    """Every CUDA device's generator state (base64), or None where CUDA is not in use
    (never initialises CUDA just to ask)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return [_encode(s) for s in torch.cuda.get_rng_state_all()]


def restore_rng(encoded: str, cuda: list[str] | None = None) -> None:
    """Set torch's generators to the states :func:`capture_rng` and :func:`capture_cuda_rng`
    returned. CUDA states are restored where this machine has CUDA and as many devices
    (a run resumed on the CPU has no use for them, and its dropout on the CPU resumes)."""
    torch.set_rng_state(_decode(encoded))
    if cuda is not None and torch.cuda.is_available() \
            and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([_decode(s) for s in cuda])
