from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from heedful.datasets import dataset_file
from heedful.runtime.device import AUTO_ENV

# The suite's tests assume the CPU wherever they do not name a device ("auto" would pick a
# GPU on a machine that has one, and their exact figures are the CPU's); the `cuda` tests
# name cuda. Set here, at import, so subprocesses (torchrun, the CLI) inherit it.
os.environ[AUTO_ENV] = "cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`cuda` tests are collected everywhere and skipped, with the reason, without a GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_files() -> tuple[Path, Path]:
    """The bundled corpus's 200-pair sample (real data, tiny)."""
    return dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")


@pytest.fixture()
def check_exact_resume(tmp_path: Path):
    """``check(base, option)``: train ``base + option`` 6 steps straight and 3 + 3 with
    ``--resume`` (the same weights, to 1e-6), and ``base`` alone 6 steps (other weights: the
    option acted)."""
    from safetensors.torch import load_file

    from heedful.cli import main

    def train(run: Path, overrides: list[str], steps: int, *extra: str) -> None:
        assert main(["train", *overrides, f"train.max_steps={steps}", *extra, "--run-dir",
                     str(run), "--no-progress"]) == 0

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return load_file(str(run / "checkpoints" / "step-00000006" / "model.safetensors"))

    def check(base: list[str], option: list[str]) -> None:
        full, part, plain = tmp_path / "full", tmp_path / "part", tmp_path / "plain"
        train(full, [*base, *option], 6)
        train(part, [*base, *option], 3)
        train(part, [], 6, "--resume")
        a, b = weights(full), weights(part)
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
        train(plain, base, 6)
        c = weights(plain)
        assert any(not torch.allclose(a[n], c[n]) for n in a if n in c)

    return check


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server() -> Callable[[Any], AbstractContextManager[str]]:
    """``with live_server(app) as url:`` the app on a real loopback socket (for browsers)."""
    return _serving
