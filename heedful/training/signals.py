"""A clean stop on SIGTERM or SIGINT: what a scheduler (Kubernetes, Slurm, torchrun) or Ctrl-C
sends before it kills.

While :class:`StopSignals` is active, the first signal only sets :attr:`StopSignals.received`;
the training loop sees it before its next update, saves an ordinary checkpoint of the step
reached and exits (status 128 + the signal's number, as a shell reports a process it
stopped). A second signal exits at once: checkpoints are written to a temporary name and
renamed (:mod:`heedful.checkpoint`), so an exit in the middle of a save leaves the previous
checkpoint intact and the half-written one is removed by the next run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("heedful.train")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: SIGTERM / SIGINT handlers for the duration of a training loop (on
    the main thread only: Python delivers signals there; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received is not None:
            log.warning("%s again: exiting now (the last complete checkpoint stays)", sig.name)
            logging.shutdown()
            os._exit(128 + signum)
        self.received = sig
        log.warning("%s received: saving a checkpoint after this update, then stopping "
                    "(send it again to exit at once)", sig.name)
