"""MkDocs hook: the configuration and command-line references, generated at build time.

``reference/config.md`` is written from the config models (every section and option: its type,
default, constraints and docstring) and ``reference/cli.md`` from ``heedful``'s argument parser
(every command and flag with its help), so neither can drift from the code. Nothing is written
to docs/: the pages exist only in the built site.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import types
import typing
from typing import Any

from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic.fields import FieldInfo

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files


# --------------------------------------------------------------------------- text helpers


def _md(text: str | None) -> str:
    """A docstring as one Markdown paragraph: reST ``code`` and :roles:`x` as code spans."""
    text = " ".join((text or "").split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type_name(annotation: Any) -> str:
    """``int | None``, ``"a" | "b"``, ``list[str]``, ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _constraints(info: FieldInfo) -> str:
    """``> 0``, ``≤ 1``, a pattern: what pydantic checks besides the type."""
    symbols = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = []
    for item in info.metadata:
        for name, symbol in symbols.items():
            if getattr(item, name, None) is not None:
                found.append(f"{symbol} {getattr(item, name)}")
        if getattr(item, "pattern", None):
            found.append(f"matches `{item.pattern}`")
    return ", ".join(found)


def _fields_table(fields: dict[str, FieldInfo], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in fields.items():
        kind = _type_name(info.annotation)
        if limits := _constraints(info):
            kind += f" ({limits})"
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(info)} | "
                    f"{_cell(_md(info.description))} |")
    return rows


# --------------------------------------------------------------------------- configuration


def config_reference() -> str:
    from heedful.audio.features import AudioConfig
    from heedful.config import Config, DataConfig, SplitConfig
    from heedful.nn.architectures import ARCHITECTURES, DEFAULT_ARCH
    from heedful.nn.model_config import ModelConfig
    from heedful.vision.augment import AugmentConfig

    out = [
        "# Configuration reference", "",
        "Every option of a config, generated from heedful's config models "
        "(`heedful.config.Config` and the classes it holds) when the site is built: the type, "
        "the default, the constraints checked at load time and the option's docstring. A "
        "config is YAML; any option can be overridden on the command line as `key=value` "
        "(`model.hidden_dim=256`). Loading, overrides and the cross-section rules: "
        "[training](../training.md).", "",
        "| section | what it configures |", "|---|---|",
    ]
    sections = {n: f for n, f in Config.model_fields.items() if n != "name"}
    out += [f"| [`{n}`](#{n}) | {_cell(_md(f.description))} |" for n, f in sections.items()]
    out += ["", "The top-level key:", "", *_fields_table({"name": Config.model_fields["name"]},
                                                          ""), ""]
    for name, info in sections.items():
        out += [f"## {name}", ""]
        if name == "model":
            out += _model_section(ARCHITECTURES, DEFAULT_ARCH, ModelConfig)
            continue
        cls = typing.cast(type[BaseModel], info.annotation)
        out += [_md(cls.__doc__), "", *_fields_table(cls.model_fields, f"{name}."), ""]
        if cls is DataConfig:
            out += ["### data.train, data.dev, data.test", "", _md(SplitConfig.__doc__), "",
                    *_fields_table(SplitConfig.model_fields, "data.SPLIT."), ""]
            for key, sub in (("augment", AugmentConfig), ("audio", AudioConfig)):
                out += [f"### data.{key}", "", _md(sub.__doc__), "",
                        *_fields_table(sub.model_fields, f"data.{key}."), ""]
    return "\n".join(out) + "\n"


def _model_section(architectures: dict[str, Any], default_arch: str,
                   base: type[BaseModel]) -> list[str]:
    out = [f"`model.arch` picks the architecture (default `{default_arch}`): "
           f"{', '.join(f'[`{a}`](#arch-{a})' for a in architectures)}. The options every "
           "architecture has come first; then each architecture's own, and the shared "
           "options whose default it changes. An option of another architecture is an "
           "error that names its owner.", "",
           "### Every architecture", "", _md(base.__doc__), "",
           *_fields_table({n: f for n, f in base.model_fields.items() if n != "arch"},
                          "model."), ""]
    for arch, entry in architectures.items():
        cls = entry.config
        own = {n: f for n, f in cls.model_fields.items()
               if n != "arch" and (n not in base.model_fields
                                   or f.default != base.model_fields[n].default)}
        out += [f"### arch: {arch} {{ #arch-{arch} }}", "", _md(cls.__doc__), ""]
        out += [*_fields_table(own, "model."), ""] if own else ["No options of its own.", ""]
    return out


# --------------------------------------------------------------------------- command line


def cli_reference() -> str:
    from heedful.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal's width
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    out = ["# Command-line reference", "",
           "Every `heedful` command and flag, generated from the argument parser "
           "(`heedful.cli.build_parser`) when the site is built; `heedful COMMAND --help` "
           "prints the same. Bad input stops with one line, `heedful: error: ...`, and exit "
           "status 2.", "", "| command | what it does |", "|---|---|"]
    out += [f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in sub.choices]
    out.append("")
    for name, command in sub.choices.items():
        out += [f"## heedful {name} {{ #{name} }}", "", _cell(helps.get(name, "")), "",
                "```text", command.format_usage().strip(), "```", ""]
        for group in command._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            out += [f"**{group.title}**", "", "| argument | default | help |", "|---|---|---|"]
            out += [_argument_row(a) for a in actions]
            out.append("")
    return "\n".join(out) + "\n"


def _argument_row(action: argparse.Action) -> str:
    names = (", ".join(f"`{s}`" for s in action.option_strings)
             or f"`{action.metavar or action.dest}`")
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        names += " {" + ", ".join(str(c) for c in action.choices) + "}"
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
    text = (action.help or "").replace("%%", "%")
    if "%(default)" in text:
        text = text.replace("%(default)s", str(default))
    return f"| {_cell(names)} | {_cell(shown)} | {_cell(_md(text))} |"
