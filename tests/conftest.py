from __future__ import annotations

import os
from pathlib import Path

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
