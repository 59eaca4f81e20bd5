"""TensorBoard output of a training run (``train.tensorboard: true``): the figures the
:class:`~heedful.training.reporter.Reporter` writes to ``metrics.jsonl`` as scalars, and the
attention of one dev sentence as an image at each validation, in event files under
``RUN_DIR/tensorboard/``. ``tensorboard --logdir RUN_DIR`` shows them.

Tags: ``train/loss``, ``train/lr``, ``train/tokens_per_s``, ``train/grad_norm`` (every
``log_every`` window); ``dev/loss``, ``dev/ppl``, ``dev/bleu``, ``dev/chrf`` (every
validation); ``attention/dev0`` (the heatmap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heedful.decoding.translator import Translation
from heedful.errors import TrainError

SUBDIR = "tensorboard"
"""The event files' folder inside the run directory."""

WINDOW_TAGS = {"train_loss": "train/loss", "lr": "train/lr", "tok_per_s": "train/tokens_per_s",
               "grad_norm": "train/grad_norm"}
"""``metrics.jsonl`` window keys -> TensorBoard tags (a validation's ``dev_x`` is ``dev/x``)."""


class Board:
    """One run's TensorBoard writer (open it on rank 0 only). ``first_step``: the step the
    run starts or resumes at; events a crashed sitting wrote from there on are dropped, so a
    resumed run's curves do not double back."""

    def __init__(self, run_dir: Path, first_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainError("train.tensorboard: true needs the tensorboard package: "
                             "pip install 'heedful[tensorboard]'") from None
        self.writer = SummaryWriter(str(run_dir / SUBDIR),
                                    purge_step=first_step if first_step > 0 else None)

    def record(self, record: dict[str, Any]) -> None:
        """A ``metrics.jsonl`` record (a window's or a validation's) as scalars at its step."""
        step = int(record["step"])
        for key, value in record.items():
            tag = WINDOW_TAGS.get(key) or (f"dev/{key[4:]}" if key.startswith("dev_") else None)
            if tag is not None and isinstance(value, int | float):
                self.writer.add_scalar(tag, value, step)

    def attention(self, step: int, example: Translation) -> None:
        """The heatmap of ``example``'s attention (last layer, mean over heads), when the
        model has attention."""
        if example.attention is None or not example.tgt_pieces:
            return
        from heedful.analysis.plots import attention_figure

        weights = example.attention[:, -1].float().mean(1).numpy()  # (T_out, S)
        fig = attention_figure(weights, example.src_pieces, example.tgt_pieces,
                               title=f"step {step}: {example.text}")
        self.writer.add_figure("attention/dev0", fig, step, close=True)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
