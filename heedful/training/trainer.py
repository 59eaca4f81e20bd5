"""The training loop: token-budget batches, label-smoothed cross-entropy, Adam or NAG,
schedules, validation with BLEU, early stopping, atomic checkpoints, exact resume.

:func:`train` is the entry point; :class:`Trainer` is the recipe it runs: :meth:`Trainer.setup`
(runtime checks, data, model, optimizer, batch stream, resume), then :meth:`Trainer.fit`,
which repeats :meth:`Trainer.train_step` and, every ``train.log_every`` /
``train.valid_every`` updates, :meth:`Trainer.log_window` / :meth:`Trainer.validate_and_save`
until a limit (steps, epochs, time budget), early stopping or a stop signal ends the run
(SIGTERM / SIGINT: a checkpoint of the step reached, see :mod:`~heedful.training.signals`).

Exact resume: the data order is a pure function of (seed, epoch, position) (see
:mod:`heedful.batching`), the learning rate a pure function of the step (plus the plateau state,
which is saved), and the RNG state of torch's generator is saved with every checkpoint — so a
run resumed from step s takes the same batches, dropout masks and learning rates as the
uninterrupted run.

The pieces live beside this module: :mod:`~heedful.training.prepare` (data),
:mod:`~heedful.training.step` (one update), :mod:`~heedful.training.schedule` (learning
rates), :mod:`~heedful.training.evaluate` (validation), :mod:`~heedful.training.state`
(what a checkpoint remembers) and :mod:`~heedful.training.reporter` (all output).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from heedful.batching import BatchStream
from heedful.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_model_weights,
    load_optimizer,
    newest_intact,
    save_checkpoint,
)
from heedful.config import Config, TrainConfig, frontend_of, load_config, save_config
from heedful.data import Batch
from heedful.decoding.translator import resolve_run_dir, translator_for
from heedful.errors import TrainError
from heedful.nn.architectures import build_model, count_parameters
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.sources import augmenter_for
from heedful.subword_sampling import SubwordSampler
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID, SAMPLING_FIELDS
from heedful.training import distributed
from heedful.training.evaluate import score_dev
from heedful.training.prepare import PreparedData, prepare_data
from heedful.training.reporter import Reporter
from heedful.training.schedule import plateau_update
from heedful.training.signals import StopSignals
from heedful.training.state import TrainerState, capture_cuda_rng, capture_rng, restore_rng
from heedful.training.step import StepRunner, StepStats, build_optimizer

__all__ = ["SIGNAL_STOP", "TrainError", "TrainResult", "Trainer", "train"]

SIGNAL_STOP = "stop signal"
"""How :attr:`TrainResult.stopped_because` begins after SIGTERM / SIGINT."""

_PREFETCH = 4
"""Batches the stream assembles ahead, on its background thread."""

log = logging.getLogger("heedful.train")


@dataclass
class TrainResult:
    """How a :func:`train` call ended (under torchrun every rank reports the stopping reason;
    the best score is rank 0's: the other ranks do not validate)."""

    run_dir: Path
    steps: int
    best_score: float | None
    best_checkpoint: Path | None
    stopped_because: str
    tokens_per_second: float
    stop_signal: int | None = None
    """The signal (SIGTERM, SIGINT) that stopped training, if one did (this rank's)."""


@dataclass
class _Window:
    """Training figures since the last ``log_every`` report. ``loss``: this rank's summed
    loss, kept on the device until the report reads it (one host synchronisation per
    window, not per update)."""

    start: float
    tokens: int = 0
    loss: torch.Tensor | float = 0.0
    grad_norm: torch.Tensor | float = 0.0
    """The summed gradient norms of the window's updates."""
    updates: int = 0


class Trainer:
    """One training run in one process (one rank under torchrun); build it with
    :meth:`setup`, run it with :meth:`fit`."""

    def __init__(self, cfg: Config, run_dir: Path, ctx: distributed.DistContext,
                 reporter: Reporter, data: PreparedData, model: Seq2SeqModel,
                 runner: StepRunner, stream: BatchStream, state: TrainerState) -> None:
        self.cfg, self.tc, self.run_dir, self.ctx = cfg, cfg.train, run_dir, ctx
        self.reporter, self.data, self.model = reporter, data, model
        self.runner, self.stream, self.state = runner, stream, state
        now = time.monotonic()
        self.deadline: float | None = None  # the time budget's end, while fit runs
        self.window = _Window(now)
        self.tokens_trained = 0  # this sitting's, for the overall tokens/s
        self.sitting_start = now
        self.clock = now  # since when train_seconds has not counted the time
        self.signals = StopSignals()  # SIGTERM / SIGINT handlers while fit runs

    # ------------------------------------------------------------------ setup

    @classmethod
    def setup(cls, cfg: Config, run_dir: Path, ctx: distributed.DistContext,
              reporter: Reporter, resume: bool = False,
              init_from: str | Path | None = None, prepare_workers: int = 1) -> Trainer:
        """Check the runtime, prepare the data (the store is built, in ``prepare_workers``
        processes, if missing or stale), build the model and the optimizer (initialised from
        ``init_from``'s best checkpoint if given), and the batch stream over the memory-mapped
        store; with ``resume``, continue from the newest intact checkpoint in ``run_dir``
        (from scratch if none)."""
        tc = cfg.train
        _configure_runtime(tc, ctx)
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        init_dir = resolve_run_dir(init_from) if init_from is not None else None
        data = _prepare_in_rank_order(cfg, run_dir, ctx, init_dir, prepare_workers)
        reporter.data_ready(len(data.store), data.filtered)
        tok = data.tokenizer
        model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size,
                            tok.src_to_tgt() if cfg.model.copy_attention else None,
                            frontend=frontend_of(cfg))
        if init_dir is not None:
            load_model_weights(model, find_checkpoint(init_dir))
            reporter.initialised_from(init_dir)
        model.to(ctx.device)
        optimizer = build_optimizer(model, tc)
        store = data.store
        # batches padded a few ahead on a background thread; page-locked for a GPU
        stream = BatchStream(store.src, store.tgt, tc.batch_tokens, tc.seed, PAD_ID, BOS_ID,
                             EOS_ID, order=store.order, sizes=store.sizes, prefetch=_PREFETCH,
                             pin_memory=ctx.device.type == "cuda",
                             after_batch=store.release_pages,
                             links=store.links if tc.guided_alignment_weight else None,
                             resegment=SubwordSampler.from_config(
                                 cfg.tokenizer, tok, cfg.data.max_src_len, cfg.data.max_tgt_len),
                             augment=augmenter_for(cfg))
        state = (_resume(run_dir, model, optimizer, reporter) if resume
                 else TrainerState())
        stream.seek(state.epoch, state.index)
        if ctx.rank > 0:  # different dropout masks on each rank (the weights are already equal)
            torch.manual_seed(tc.seed * 1000 + ctx.rank + state.step)
        runner = StepRunner(model, optimizer, cfg, ctx)
        if ctx.enabled:
            reporter.distributed(ctx, tc.accumulate)
        reporter.model_ready(cfg.model.arch, count_parameters(model), len(stream.plan),
                             _cpu_gemm(ctx))
        model.train()
        return cls(cfg, run_dir, ctx, reporter, data, model, runner, stream, state)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainResult:
        """Train until a limit or early stopping; validate and save every ``valid_every``
        updates and once more at the end (unless the last update just did)."""
        tc, state = self.tc, self.state
        if self.ctx.is_main:
            _remove_half_written_checkpoints(self.run_dir)
        # The budget is a total over sittings: a resumed run only gets what is left of it.
        self.deadline = (time.monotonic() + max(tc.max_minutes * 60 - state.train_seconds, 0.0)
                         if tc.max_minutes else None)
        self.reporter.start_training(tc, state.step, state.train_seconds)
        self.window = _Window(time.monotonic())
        self.tokens_trained, self.sitting_start = 0, time.monotonic()
        self.clock = time.monotonic()
        first_step = state.step  # a signal before any update of this sitting saves nothing
        try:
            with self.signals:
                while (stopped := self._limit_reached()) is None:
                    stats = self.train_step(self._draw())
                    self._count(stats)
                    if state.step % tc.log_every == 0:
                        self.log_window(stats.lr)
                    if state.step % tc.valid_every == 0 and self.validate_and_save():
                        stopped = (f"early stopping ({tc.patience} validations without "
                                   "improvement)")
                        break
                if stopped.startswith(SIGNAL_STOP):  # no validation: stop within seconds
                    if state.step > first_step and state.step % tc.valid_every != 0:
                        self.ctx.main_first(f"saved-{state.step}", lambda: self._save(False))
                elif state.step % tc.valid_every != 0 or state.step == 0:
                    self.validate_and_save(final=True)
        finally:
            self.stream.close()
            self.reporter.end_training()
        rate = self.tokens_trained / max(time.monotonic() - self.sitting_start, 1e-9)
        self.reporter.stopped(state.step, stopped, tc.early_stopping_metric, state.best_score,
                              state.best_step)
        got = self.signals.received
        try:
            best: Path | None = find_checkpoint(self.run_dir)
        except CheckpointError:  # stopped by a signal before the first checkpoint
            best = None
        return TrainResult(self.run_dir, state.step, state.best_score, best, stopped, rate,
                           int(got) if got is not None else None)

    def _limit_reached(self) -> str | None:
        """Why training must stop before the next update, if it must."""
        if self._signalled():
            got = self.signals.received
            return f"{SIGNAL_STOP} ({got.name if got else 'on another rank'})"
        if self.tc.max_steps is not None and self.state.step >= self.tc.max_steps:
            return "max_steps"
        if self.tc.max_epochs is not None and self.stream.completed_epochs >= self.tc.max_epochs:
            return "max_epochs"
        # rank 0's clock decides, so every rank stops after the same step. Under torchrun the
        # ranks agree at log windows only: an all-reduce every update would make each one
        # wait for the device (the budget overruns by at most log_every updates)
        if self.deadline is None:
            return None
        over = time.monotonic() >= self.deadline
        if self.ctx.enabled:
            if self.state.step % self.tc.log_every != 0:
                return None
            over = self.ctx.any(self.ctx.is_main and over)
        return "time budget" if over else None

    def _signalled(self) -> bool:
        """Whether a stop signal arrived (under torchrun: on any rank, agreed at log windows
        like the time budget)."""
        got = self.signals.received is not None
        if not self.ctx.enabled:
            return got
        return self.state.step % self.tc.log_every == 0 and self.ctx.any(got)

    def _draw(self) -> list[Batch]:
        """The next update's batches: every rank draws the same world x accumulate."""
        return [next(self.stream) for _ in range(self.ctx.world_size * self.tc.accumulate)]

    def train_step(self, batches: list[Batch]) -> StepStats:
        """One optimizer update on this rank's share of ``batches`` (every rank's draw, see
        :meth:`_draw`); counts the step."""
        stats = self.runner.train_step(batches, self.state.step, self.state.plateau_scale)
        self.state.step += 1
        return stats

    def _count(self, stats: StepStats) -> None:
        self.window.tokens += stats.num_tokens
        self.window.loss += stats.loss_sum
        self.window.grad_norm += stats.grad_norm
        self.window.updates += 1
        self.tokens_trained += stats.num_tokens
        self.reporter.step_done(self.state.step)

    def log_window(self, lr: float) -> None:
        """Report the loss per token, tokens/s and the mean gradient norm since the last
        report; start a new window."""
        window = self.window
        local = float(window.loss)  # the window's one wait for the device
        loss = self.ctx.sum([local])[0] / max(window.tokens, 1)  # tokens: the global count
        grad_norm = float(window.grad_norm) / max(window.updates, 1)
        now = time.monotonic()
        rate = window.tokens / max(now - window.start, 1e-9)
        left = max(self.deadline - now, 0.0) if self.deadline is not None else None
        trained = self.state.train_seconds + now - self.clock
        self.reporter.window(self.state.step, self.stream.epoch, loss, rate, lr, left,
                             grad_norm, trained)
        self.window = _Window(time.monotonic())

    # ------------------------------------------------------------------ validation

    def validate_and_save(self, final: bool = False) -> bool:
        """Rank 0 validates and saves a checkpoint while the other ranks wait; returns True
        on every rank if early stopping says stop (never for the ``final`` one)."""
        # the others wait outside any collective: validation may outlast its timeout
        stop = self.ctx.main_first(f"validated-{self.state.step}",
                                   lambda: self._validate_and_save_here(final))
        return self.ctx.any(bool(stop))

    def _validate_and_save_here(self, final: bool) -> bool:
        state = self.state
        record: dict[str, Any] = {"step": state.step, "epoch": self.stream.epoch}
        is_best = self._validate(record) if self.data.dev is not None else True
        self._save(is_best)
        record["lr"] = self.runner.optimizer.param_groups[0]["lr"]
        record["train_seconds"] = round(state.train_seconds, 1)
        self.reporter.saved(record)
        patience = self.tc.patience
        return patience is not None and state.bad_validations >= patience and not final

    def _validate(self, record: dict[str, Any]) -> bool:
        """Score the dev set into ``record``; update the best score, the early-stopping
        count and the plateau schedule. Returns whether this is the best so far."""
        assert self.data.dev is not None
        tc, state = self.tc, self.state
        scores = score_dev(self.model, self.data.tokenizer, self.data.dev, self.cfg)
        record.update({"dev_loss": round(scores.loss, 4), "dev_ppl": scores.ppl,
                       "dev_bleu": scores.bleu, "dev_chrf": scores.chrf})
        if scores.cer is not None:
            record["dev_cer"] = scores.cer
        value = scores.value(tc.early_stopping_metric)
        higher_better = tc.early_stopping_metric not in ("loss", "cer")
        best = state.best_score
        is_best = best is None or (value > best if higher_better else value < best)
        if is_best:
            state.best_score, state.best_step, state.bad_validations = value, state.step, 0
        else:
            state.bad_validations += 1
        plateau = plateau_update(tc, state.plateau, value, higher_better)
        if plateau.scale != state.plateau_scale:
            self.reporter.plateau(plateau.scale)
        state.plateau = plateau
        self.reporter.validated(state.step, scores, is_best)
        if self.reporter.wants_attention:
            self._report_attention()
        return is_best

    def _report_attention(self) -> None:
        """Translate the first dev source (greedy) and give its attention to the reporter,
        so one can watch it form from one validation to the next."""
        assert self.data.dev is not None
        translator = translator_for(self.model, self.data.tokenizer, self.cfg)
        example = translator.translate(self.data.dev.src[:1], return_attention=True,
                                       beam_size=1, n_best=1)[0]
        self.model.train()
        self.reporter.attention(self.state.step, example)

    def _save(self, is_best: bool) -> None:
        """Checkpoint the weights, the optimizer and the state (with the stream position, the
        RNG and the time trained so far)."""
        state = self.state
        state.train_seconds += time.monotonic() - self.clock
        self.clock = time.monotonic()
        pos = self.stream.position()
        state.epoch, state.index = pos["epoch"], pos["index"]
        state.rng_torch, state.rng_cuda = capture_rng(), capture_cuda_rng()
        save_checkpoint(self.run_dir, state.step, self.model, state.to_json(),
                        self.runner.optimizer, self.tc.keep_last, is_best)


# --------------------------------------------------------------------------- setup helpers


def _configure_runtime(tc: TrainConfig, ctx: distributed.DistContext) -> None:
    """Threads, the GPU's math modes, and the precision checks that must fail before any
    work is done."""
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    if ctx.device.type == "cuda":
        from heedful.runtime.device import configure_cuda_math

        configure_cuda_math(tf32=tc.tf32)
    if tc.deterministic:
        from heedful.runtime.device import use_deterministic_kernels

        use_deterministic_kernels()
    from heedful.runtime.precision import resolve_precision

    precision = resolve_precision(tc.precision, ctx.device)
    if tc.precision == "auto":
        log.info("train.precision auto: %s on %s", precision, ctx.device)
    if precision == "fp16" and ctx.device.type != "cuda":
        raise TrainError("train.precision: fp16 needs a CUDA GPU; use bf16 (or fp32) on CPU")
    if precision == "bf16" and ctx.device.type == "cpu":
        from heedful.runtime.allocator import bound_kernel_caches
        from heedful.runtime.precision import check_cpu_precision

        try:
            check_cpu_precision(precision)
        except ValueError as err:
            raise TrainError(str(err)) from None

        bound_kernel_caches()  # from Python too, not only the console script (see there)


def _prepare_in_rank_order(cfg: Config, run_dir: Path, ctx: distributed.DistContext,
                           init_dir: Path | None, workers: int) -> PreparedData:
    """:func:`prepare_data`, rank 0 first: it checks the store (building it, and the
    tokenizer, if missing or stale) while the other ranks wait outside any collective (it can
    take longer than a collective's timeout); they then map the same files."""
    data = ctx.main_first("prepared", lambda: prepare_data(
        cfg, run_dir, tokenizer_from=init_dir, workers=workers))
    return data if data is not None else prepare_data(cfg, run_dir, check=False)


def _resume(run_dir: Path, model: Seq2SeqModel, optimizer: torch.optim.Optimizer,
            reporter: Reporter) -> TrainerState:
    """Load the newest intact checkpoint's weights, optimizer state and RNG into place and return
    its trainer state (a fresh state if there is none)."""
    ckpt, problems = newest_intact(run_dir)
    for problem in problems:
        reporter.damaged_checkpoint(problem)
    if ckpt is None:
        reporter.no_checkpoint(run_dir)
        return TrainerState()
    saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    load_model_weights(model, ckpt)
    load_optimizer(optimizer, ckpt, saved["optimizer_param_groups"])
    state = TrainerState.from_json(saved)
    restore_rng(saved["rng_torch"], saved.get("rng_cuda"))
    reporter.resumed(ckpt, state.step)
    return state


def _cpu_gemm(ctx: distributed.DistContext) -> str | None:
    """The float32 GEMM backend, when training on the CPU."""
    if ctx.device.type != "cpu":
        return None
    from heedful.runtime.gemm import cpu_gemm_backend

    return cpu_gemm_backend()


def _remove_half_written_checkpoints(run_dir: Path) -> None:
    """After a crash: drop the temporary directories of checkpoints that were cut off."""
    for tmp in (run_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- entry point


def train(
    config: Config | None,
    run_dir: str | Path,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool = True,
    prepare_workers: int = 1,
) -> TrainResult:
    """Train a model into ``run_dir`` (see the module docstring for resume semantics).
    Workers that torchrun restarts after a failure (``--max-restarts``) resume by themselves.

    ``config`` may be None with ``resume=True`` (the run directory's config is used). A
    resumed run may change only the train and decode sections. The training data comes from
    the run directory's prepared store (``heedful prepare``), built first, in
    ``prepare_workers`` processes, when it is missing or stale. Raises :class:`TrainError`
    for a run directory or config that cannot start.
    """
    run_dir = Path(run_dir)
    restarts = distributed.restart_count()
    resume = resume or restarts > 0  # torchrun --max-restarts started this worker again
    config = _run_config(config, run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.env_rank() == 0:  # under torchrun, rank 0 alone writes the run directory
        save_config(config, run_dir / "config.yaml")
    with Reporter(run_dir, distributed.env_rank(), progress,
                  config.train.tensorboard) as reporter:
        if restarts:
            log.warning("torchrun restart %d: resuming from the newest intact checkpoint",
                        restarts)
        ctx = distributed.setup(config.train.device, config.train.dist_timeout_minutes)
        try:
            result = Trainer.setup(config, run_dir, ctx, reporter, resume, init_from,
                                   prepare_workers).fit()
        except BaseException:
            distributed.shutdown(ctx, finished=False)
            raise
        distributed.shutdown(ctx)
        return result


def _fixed_part(config: Config, section: str) -> Any:
    """What a resumed run must keep of a section (subword sampling is a training option)."""
    if section == "tokenizer":
        return config.tokenizer.model_dump(exclude=set(SAMPLING_FIELDS))
    return getattr(config, section)


def _run_config(config: Config | None, run_dir: Path, resume: bool) -> Config:
    """The config to train with, after checking it fits the run directory."""
    ckpt_root = run_dir / "checkpoints"
    if resume and (run_dir / "config.yaml").exists():
        saved = load_config(run_dir / "config.yaml")
        if config is None:
            config = saved
        for section in ("data", "tokenizer", "model"):
            if _fixed_part(config, section) != _fixed_part(saved, section):
                raise TrainError(
                    f"cannot resume {run_dir} with a different '{section}' section than the "
                    "run was started with (only train and decode options may change)")
    if config is None:
        raise TrainError(f"{run_dir} has no config.yaml to resume from; pass a config")
    if not resume and ckpt_root.is_dir() and any(ckpt_root.iterdir()):
        raise TrainError(
            f"{run_dir} already holds checkpoints; use --resume to continue that run, or "
            "choose a new run directory")
    return config
