"""The documentation site builds with ``mkdocs build --strict`` (a broken link or a missing page
fails it), and its generated references cover every config option and every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in ("index.html", "tutorial.html", "training.html", "architecture.html",
                 "benchmarks.html", "engineering-log.html", "api.html",
                 "reference/config.html", "reference/cli.html", "repo/CHANGELOG.html"):
        assert page in pages, page
    assert "heedful.decoding.translator.Translator" in (site / "api.html").read_text()


def test_the_references_cover_every_option_and_command(site: Path) -> None:
    from heedful.cli import build_parser
    from heedful.config import Config
    from heedful.nn.architectures import ARCHITECTURES

    config_page = (site / "reference" / "config.html").read_text()
    keys = [f"{section}.{name}" for section, info in Config.model_fields.items()
            if section not in ("name", "model")
            for name in info.annotation.model_fields]
    keys += [f"model.{name}" for arch in ARCHITECTURES.values() for name in
             arch.config.model_fields if name != "arch"]
    assert [k for k in keys if f"<code>{k}</code>" not in config_page] == []
    cli_page = (site / "reference" / "cli.html").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    assert [c for c in commands if f"heedful {c}" not in cli_page] == []
    assert "--beam-size" in cli_page and "--x" in cli_page


def test_every_config_option_has_a_docstring() -> None:
    """The generated reference takes each option's meaning from its docstring."""
    from pydantic import BaseModel

    from heedful.config import Config, SplitConfig
    from heedful.nn.architectures import ARCHITECTURES

    classes: list[type[BaseModel]] = [Config, SplitConfig,
                                      *(a.config for a in ARCHITECTURES.values())]
    classes += [info.annotation for info in Config.model_fields.values()
                if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)]
    missing = [f"{cls.__name__}.{name}" for cls in classes
               for name, info in cls.model_fields.items()
               if name != "arch" and not (info.description or "").strip()]
    assert missing == []
