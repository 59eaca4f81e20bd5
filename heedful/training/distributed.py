"""Multi-process training on PyTorch's own engine: DDP, launched by ``torchrun``.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; heedful reads
them, joins the process group (``gloo`` on CPU, ``nccl`` on CUDA) and wraps the model in
``DistributedDataParallel``. Without them (a plain ``heedful train``) everything here is a
no-op with world size 1.

How a step is shared (see :mod:`heedful.training.trainer`): every rank walks the same deterministic
batch stream; a step draws ``world_size x accumulate`` batches and rank r trains on its own
``accumulate`` of them. The loss is divided by the target-token count *summed over all ranks*
(an all-reduce), and multiplied by the world size because DDP averages gradients — so the
gradient equals the single-process gradient of the same global batch, however unevenly the
tokens fall on the ranks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def sum(self, values: list[float]) -> list[float]:
        """All-reduce (sum) a few numbers across ranks."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(x) for x in t.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (a stop decision everybody follows)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def main_first(self, key: str, work: Callable[[], T]) -> T | None:
        """Rank 0 does ``work`` (returning its result) while the other ranks wait for it,
        outside any collective, on the process group's key-value store (returning None).

        Why not a barrier: a barrier waiting on rank 0's long work (SentencePiece training,
        encoding a corpus, validating) counts against the collective timeout, and NCCL's
        watchdog would end the run. A store wait has no such clock: if rank 0 fails, torchrun
        ends the other ranks. ``key`` must be unique within the launch (e.g. carry the step).
        """
        if not self.enabled:
            return work()
        store = dist.distributed_c10d._get_default_store()
        if self.is_main:
            result = work()
            store.set(f"heedful/{key}", "done")
            return result
        store.wait([f"heedful/{key}"], timedelta(days=7))
        return None


def restart_count() -> int:
    """How often torchrun has restarted this job's workers (``--max-restarts``; 0 outside
    torchrun or on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def env_rank() -> int:
    """This process's rank under torchrun (0 otherwise), readable before :func:`setup`."""
    return int(os.environ.get("RANK", "0"))


def _store_of_this_attempt(world: int, timeout: timedelta) -> dist.Store | None:
    """Under torchrun, the key-value store of this start of the workers alone; else None
    (``init_process_group`` reads MASTER_ADDR/MASTER_PORT itself).

    Why: torchrun's workers share the agent's store (``TORCHELASTIC_USE_AGENT_STORE``), and
    after ``--max-restarts`` restarts them the keys of the killed start are still in it. The
    new gloo group then reads the dead ranks' addresses and hangs or fails to connect
    ("Connection refused"; pytorch/pytorch#135712), and :meth:`DistContext.main_first` would
    see the old start's "done". A prefix per start keeps every start's keys apart; all
    workers of a node restart together, so they agree on the count."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                world, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"heedful/start_{restart_count()}", agent_store)


_joined = False  # True once this process has joined a torchrun process group (see exit_now)


def joined_process_group() -> bool:
    """Whether :func:`setup` joined a process group in this process."""
    return _joined


def setup(device_name: str = "auto", timeout_minutes: float = 60.0) -> DistContext:
    """Join the torchrun process group if launched by torchrun; pick the device.

    ``device_name`` is ``train.device`` (see :func:`heedful.runtime.device.resolve_device`:
    under torchrun, ``auto``/``cuda`` mean the rank's LOCAL_RANK GPU, and more ranks on a node
    than GPUs is a :class:`~heedful.runtime.device.DeviceError` before anything is joined).
    ``timeout_minutes``: how long a collective may wait (NCCL's default, 10 minutes, is
    shorter than some of rank 0's work; see :meth:`DistContext.main_first`)."""
    from heedful.runtime.device import check_world_fits, resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = env_rank()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, "train.device", local_rank=local)
    if device.type == "cuda":
        check_world_fits(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        global _joined
        timeout = timedelta(minutes=timeout_minutes)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world, timeout=timeout,
                                store=_store_of_this_attempt(world, timeout))
        _joined = True
    return DistContext(rank, world, local, device)


def shutdown(ctx: DistContext, finished: bool = True) -> None:
    """Leave the process group. ``finished``: every rank got here normally, so wait for all of
    them first (after an error the others may never arrive, and a barrier would hang)."""
    if ctx.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def exit_now(code: int) -> NoReturn:
    """Flush and end the process without Python's interpreter teardown.

    Why: once a model has been wrapped in DDP, ``destroy_process_group`` no longer stops gloo's
    worker threads (torch 2.13 keeps the process group alive). A worker can still be letting
    go of the last collective's tensors when the main thread is already tearing the
    interpreter down; freeing a tensor that Python created needs the GIL, which a thread can
    no longer take then, and the process aborts ("terminate called without an active
    exception", SIGABRT, from ``ProcessGroupGloo::runLoop`` in a core dump) after all its work
    is done — about 1 torchrun launch in 60 here. Everything heedful writes is closed by now,
    so skipping the teardown loses nothing; the console script calls this under torchrun.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # a closed or broken pipe: nothing left to save
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def wrap(module: torch.nn.Module, ctx: DistContext) -> Any:
    """DDP around ``module`` when distributed (else the module itself)."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # no buffer broadcast each step: heedful's buffers (position tables) are the same
    # on every rank by construction, and DDP would copy them from rank 0 at every forward
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
