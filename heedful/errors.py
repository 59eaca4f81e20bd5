"""The exceptions heedful raises for problems of the user's making.

Every one of them derives from :class:`UserError`: the console script prints such an error as
one ``heedful: error: ...`` line and exits with status 2. Anything else that escapes a command
is a bug, reported as one (see :mod:`heedful.cli`), never dressed up as a user error.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, corpus, checkpoint, request), with a message
    that names the file, line or key."""


class ConfigError(UserError, ValueError):
    """A configuration problem, with a message that names the key path."""


class UnknownNameError(ConfigError, KeyError):
    """A name that is not in a registry (a preset, a dataset, a benchmark configuration).

    A ``KeyError`` too, for callers that look names up like dict keys."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UserError, ValueError):
    """A problem with a corpus file, with the file (and line) it concerns."""


class CheckpointError(UserError, RuntimeError):
    """A run directory or checkpoint that cannot be loaded, with the path."""


class TrainError(UserError, RuntimeError):
    """A problem that stops training before it starts."""


class CorpusBuildError(UserError, RuntimeError):
    """A corpus that ``heedful data`` cannot build from what it was given."""


class LongInputWarning(UserWarning):
    """An input longer than the model takes, cut to fit (the message names the line and how
    much was cut). The console script prints it as one ``heedful: warning: ...`` line."""


class BadLineWarning(UserWarning):
    """An input line that cannot be read (invalid UTF-8), passed over as an empty line
    (``--skip-bad-lines``); the message names the file and line. Printed like
    :class:`LongInputWarning`."""
