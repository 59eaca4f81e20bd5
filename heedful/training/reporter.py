"""Everything training tells the user: the console, ``train.log``, the progress bar,
``metrics.jsonl`` and, with ``train.tensorboard``, TensorBoard (:mod:`heedful.training.board`).
The trainer reports events here and writes nowhere itself.

Per rank: rank 0 writes ``train.log`` and ``metrics.jsonl``, rank r > 0 ``train.rank{r}.log``
and ``metrics.rank{r}.jsonl`` beside them (never over them); the progress bar is rank 0's.
The messages and records are an interface (tests and users' scripts read them): change them
only on purpose.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from heedful.config import TrainConfig
from heedful.decoding.translator import Translation
from heedful.training.board import Board
from heedful.training.distributed import DistContext
from heedful.training.evaluate import DevScores

# train.log holds the records of every "heedful" logger; training's own are "heedful.train"
log = logging.getLogger("heedful.train")


class Reporter:
    """The training run's output channels, for the process of rank ``rank``.

    A context manager: entering attaches the ``train.log`` handler to the ``heedful`` logger
    (so library modules' records land there too), leaving closes everything.
    ``progress``: print the console lines meant for an interactive run and show a bar (rank 0
    only; other ranks never show one). ``tensorboard``: also write TensorBoard event files
    (rank 0 only).
    """

    def __init__(self, run_dir: Path, rank: int, progress: bool,
                 tensorboard: bool = False) -> None:
        self.run_dir, self.rank = run_dir, rank
        self.is_main = rank == 0
        self.progress = progress and self.is_main
        self.tensorboard = tensorboard and self.is_main
        self._board: Board | None = None
        self._handler: logging.Handler | None = None
        self._bar: Any = None  # a tqdm bar while training, when progress is on
        self._bar_clock = 0.0  # when a time-budget bar last advanced
        self._bar_postfix: dict[str, str] = {}
        self._metrics: TextIO | None = None

    def __enter__(self) -> Reporter:
        name = "train.log" if self.is_main else f"train.rank{self.rank}.log"
        handler = logging.FileHandler(self.run_dir / name, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("heedful").addHandler(handler)
        logging.getLogger("heedful").setLevel(logging.INFO)
        self._handler = handler
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.end_training()
        if self._handler is not None:
            logging.getLogger("heedful").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    # ------------------------------------------------------------------ setting up

    def data_ready(self, kept: int, dropped: int) -> None:
        """The training pairs left after the length filters."""
        log.info("training pairs: %d kept, %d dropped by length filters", kept, dropped)
        if self.progress:
            print(f"heedful: {kept} training pairs, {dropped} dropped (length filters "
                  "data.max_src_len/max_tgt_len/max_len_ratio, empty sides, blank JSONL "
                  "lines)")

    def initialised_from(self, init_dir: Path) -> None:
        log.info("initialised weights from %s (fresh optimizer and schedule)", init_dir)

    def damaged_checkpoint(self, problem: str) -> None:
        """A checkpoint a resume skips (every rank says so: each reads the files itself)."""
        log.warning("skipping a damaged checkpoint: %s", problem)
        print(f"heedful: skipping a damaged checkpoint: {problem}")

    def no_checkpoint(self, run_dir: Path) -> None:
        print(f"heedful: no intact checkpoint in {run_dir}; starting from scratch")

    def resumed(self, ckpt: Path, step: int) -> None:
        if self.is_main:
            print(f"heedful: resuming from {ckpt} (step {step})")
        log.info("resumed from %s at step %d", ckpt, step)

    def distributed(self, ctx: DistContext, accumulate: int) -> None:
        log.info("distributed: rank %d of %d on %s; each step takes %d x %d batches",
                 ctx.rank, ctx.world_size, ctx.device, ctx.world_size, accumulate)

    def model_ready(self, arch: str, parameters: int, batches_per_epoch: int,
                    cpu_gemm: str | None) -> None:
        """``cpu_gemm``: the float32 linear layers' backend when training on the CPU."""
        if cpu_gemm is not None:
            log.info("float32 linear layers on %s (heedful.runtime.gemm, HEEDFUL_CPU_GEMM)",
                     cpu_gemm)
        log.info("model: %s, %d parameters; %d batches per epoch", arch, parameters,
                 batches_per_epoch)

    # ------------------------------------------------------------------ training

    def start_training(self, tc: TrainConfig, step: int, spent_seconds: float) -> None:
        """Open this rank's metrics file (rank 0 first ends a line a crash cut off, so the
        next record starts on a line of its own) and start the bar."""
        if self.is_main:
            _end_cut_line(self.run_dir / "metrics.jsonl")
        name = "metrics.jsonl" if self.is_main else f"metrics.rank{self.rank}.jsonl"
        self._metrics = open(self.run_dir / name, "a", encoding="utf-8")  # noqa: SIM115
        if self.tensorboard:
            self._board = Board(self.run_dir, step)
        if self.progress:
            self._bar = _progress_bar(tc, step, spent_seconds)
            self._bar_clock = time.monotonic()

    def step_done(self, step: int) -> None:
        """An update finished: advance the bar (by the seconds spent, on a time-budget bar)."""
        bar = self._bar
        if bar is None:
            return
        if bar.unit == "s":
            now = time.monotonic()
            bar.update(min(now - self._bar_clock, bar.total - bar.n))
            self._bar_clock = now
            # keep the last window's loss/tok/s in view while the step advances
            self._bar_postfix["step"] = str(step)
            bar.set_postfix(self._bar_postfix, refresh=False)
        else:
            bar.update(1)

    def window(self, step: int, epoch: int, loss: float, tokens_per_s: float, lr: float,
               seconds_left: float | None, grad_norm: float, train_seconds: float) -> None:
        """The training loss, speed and mean gradient norm (before clipping) over the last
        ``train.log_every`` updates; ``seconds_left``: of the time budget, if there is one;
        ``train_seconds``: the time trained so far, over all sittings."""
        postfix = {"step": str(step), "loss": f"{loss:.3f}", "tok/s": f"{tokens_per_s:,.0f}",
                   "lr": f"{lr:.2e}"}
        if seconds_left is not None:
            postfix["left"] = f"{seconds_left / 60:.1f}m"
        if self._bar is not None:
            self._bar_postfix = dict(postfix)
            self._bar.set_postfix(postfix)
        log.info("step %d epoch %d loss %.4f tok/s %.0f lr %.2e grad norm %.3g", step, epoch,
                 loss, tokens_per_s, lr, grad_norm)
        self._write({"step": step, "train_loss": round(loss, 4),
                     "tok_per_s": round(tokens_per_s, 1), "lr": lr,
                     "grad_norm": round(grad_norm, 4),
                     "train_seconds": round(train_seconds, 1)}, flush=False)

    def plateau(self, scale: float) -> None:
        """The plateau schedule lowered the learning rate."""
        log.info("plateau: learning rate scale now %.4f", scale)

    def validated(self, step: int, scores: DevScores, is_best: bool) -> None:
        msg = (f"step {step}: dev loss {scores.loss:.3f} ppl {scores.ppl} "
               f"BLEU {scores.bleu:.2f} chrF {scores.chrf:.2f}"
               + ("" if scores.cer is None else f" CER {100 * scores.cer:.2f}%")
               + (" (best)" if is_best else ""))
        log.info(msg)
        if self._bar is not None:
            self._bar.write(msg)

    @property
    def wants_attention(self) -> bool:
        """Whether :meth:`attention` is worth a translation (TensorBoard is on)."""
        return self._board is not None

    def attention(self, step: int, example: Translation) -> None:
        """A validation's translation of the first dev source, with its attention."""
        if self._board is not None:
            self._board.attention(step, example)

    def saved(self, record: dict[str, Any]) -> None:
        """A validation's ``metrics.jsonl`` record, written once its checkpoint is saved
        (flushed: a crash keeps it)."""
        self._write(record, flush=True)
        if self._board is not None:
            self._board.flush()

    def end_training(self) -> None:
        """Close the metrics file and the bar (again: a no-op)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._board is not None:
            self._board.close()
            self._board = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stopped(self, steps: int, reason: str, metric: str, best_score: float | None,
                best_step: int | None) -> None:
        log.info("stopped after %d steps: %s; best %s %s at step %s", steps, reason, metric,
                 best_score, best_step)

    def _write(self, record: dict[str, Any], flush: bool) -> None:
        assert self._metrics is not None, "start_training opens the metrics file"
        self._metrics.write(json.dumps(record) + "\n")
        if self._board is not None:
            self._board.record(record)
        if flush:
            self._metrics.flush()


def _end_cut_line(metrics: Path) -> None:
    """End the file's last line if a crash cut it off mid-record."""
    if metrics.exists() and metrics.stat().st_size:
        with open(metrics, "rb+") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _progress_bar(tc: TrainConfig, initial: int, spent_seconds: float) -> Any:
    """A step bar; under a time budget without max_steps, a bar over the budget's seconds
    (so it can show a percentage and the time left)."""
    from tqdm import tqdm

    if tc.max_steps is None and tc.max_minutes is not None:
        budget = round(tc.max_minutes * 60)
        return tqdm(total=budget, initial=min(spent_seconds, budget), unit="s", desc="train",
                    dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total}s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=tc.max_steps, initial=initial, unit="step", desc="train",
                dynamic_ncols=True)
