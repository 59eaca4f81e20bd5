"""What can go wrong when PyYAML reads user text, and how to say it in one line."""

from __future__ import annotations

import yaml

YAML_PROBLEMS = (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError)
"""What PyYAML's safe loader raises for bad input: its own errors, and (a tagged scalar it
cannot convert, e.g. ``!!timestamp`` on a bad date) Python's."""


def yaml_problem(err: BaseException) -> str:
    """A YAML error in one line: the problem and where it is."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{err.problem or err.context or 'cannot be parsed'}{where}"
    if isinstance(err, yaml.YAMLError):
        return " ".join(str(err).split())
    return "a tagged value (such as !!timestamp or !!int) cannot be converted to its type"
