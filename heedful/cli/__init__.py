"""The ``heedful`` console script: parse arguments, call a library function, print.

Each command family is a module with ``register(subparsers)``, which adds its commands'
parsers and binds each one's handler (``func``). A problem of the user's making
(:class:`heedful.errors.UserError`: a bad corpus, config, checkpoint or name) is reported as one
``heedful: error: ...`` line on stderr with exit status 2, never a traceback. Anything else
that escapes a command is a bug in heedful and is reported as one: the traceback, and how to
report it, with exit status 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from heedful.cli import (
    align,
    bench,
    data,
    evaluate,
    prepare,
    serve,
    train,
    transcribe,
    translate,
)
from heedful.errors import BadLineWarning, LongInputWarning, UserError

FAMILIES = (train, prepare, translate, transcribe, evaluate, align, serve, data, bench)
"""The command modules, each with ``register(subparsers)``."""

def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each family registers its own."""
    parser = argparse.ArgumentParser(
        prog="heedful", description="Sequence-to-sequence models with attention.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:  # `heedful --help` lists the commands family by family
        family.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    from heedful.runtime.allocator import bound_kernel_caches, retain_freed_memory

    retain_freed_memory()  # this process is ours: reuse freed memory (heedful.runtime.allocator)
    bound_kernel_caches()
    from heedful.runtime.gemm import requested_backend

    try:  # a bad setting stops here, not in the middle of a training run
        requested_backend()
    except ValueError as err:
        print(f"heedful: error: {err}", file=sys.stderr)
        return 2
    code = run_command(args, sys.argv[1:] if argv is None else list(argv))
    from heedful.training import distributed

    if argv is None and distributed.joined_process_group():
        distributed.exit_now(code)  # a torchrun worker: see exit_now for why
    return code


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Call the command's handler; turn what it raises into a message and an exit status."""
    import warnings

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run_handler(args, argv)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """heedful's own warnings (a cut input) as one ``heedful: warning:`` line; any other
    as Python prints it."""
    import warnings

    if issubclass(category, LongInputWarning | BadLineWarning):
        print(f"heedful: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _run_handler(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"heedful: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("heedful: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.filename is None:  # not about a path: a bug
            return _report_bug(err, argv)
        # a path the user gave that cannot be read or written (a missing folder, a full disk)
        print(f"heedful: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except Exception as err:
        if _lost_a_rank(err):
            # torchrun ends the job or restarts its workers (--max-restarts), which resume
            from heedful.training.distributed import env_rank

            print(f"heedful: error: rank {env_rank()} lost contact with another rank of the "
                  f"job, which probably died ({' '.join(str(err).split())[:300]})",
                  file=sys.stderr)
            return 1
        return _report_bug(err, argv)


def _lost_a_rank(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because a peer rank went away (not a bug here:
    another process was killed, ran out of memory or crashed)."""
    from heedful.training import distributed

    if not distributed.joined_process_group() or not isinstance(err, RuntimeError):
        return False
    import torch.distributed as dist

    text = str(err)
    return isinstance(err, dist.DistError) or ("gloo" in text and "peer" in text)


def _report_bug(err: BaseException, argv: Sequence[str]) -> int:
    """Say that this is a bug in heedful, with what a report needs; exit status 1."""
    print(f"heedful: internal error (this is a bug in heedful): {type(err).__name__}: "
          f"{err}", file=sys.stderr)
    traceback.print_exception(err, file=sys.stderr)
    print("heedful: please report it to the heedful developers with the traceback above "
          f"and the command line: {shlex.join(['heedful', *argv])}", file=sys.stderr)
    return 1
