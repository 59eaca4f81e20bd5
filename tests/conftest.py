from __future__ import annotations

from pathlib import Path

import pytest

from heedful.datasets import dataset_file


@pytest.fixture(scope="session")
def sample_files() -> tuple[Path, Path]:
    """The bundled corpus's 200-pair sample (real data, tiny)."""
    return dataset_file("bible-es-en", "sample.es"), dataset_file("bible-es-en", "sample.en")
