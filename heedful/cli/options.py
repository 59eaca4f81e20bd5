"""Options shared by several commands: the device flags, the decoding flags (derived from
:class:`heedful.decoding.options.DecodeOptions`), and the alignment-extraction flags."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heedful.errors import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
    """What ``add_subparsers`` returns: each command module's ``register`` adds to it."""

DECODE_GROUP_TITLE = "decoding (defaults: the run's decode config)"
ALIGN_GROUP_TITLE = ("alignment extraction (defaults: RUN_DIR/alignment.json if tuned, "
                     "else the head a guided-alignment run supervised, else argmax over the "
                     "last layer's mean head)")


DEVICE_GROUP_TITLE = "device"
DEVICE_HELP = ("where the model runs: auto (default: the GPU where there is one, else the CPU), "
               "cpu, cuda or cuda:N")
PRECISION_HELP = ("decoding arithmetic: fp32 (default), bf16 autocast (a GPU, or a CPU with "
                  "native bf16) or fp16 autocast (a GPU only)")


SKIP_BAD_HELP = ("an input line that is not UTF-8 gives an empty output line and a warning "
                 "(default: an error naming it, after the lines before it)")


def add_device_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """``--device`` (checked by :func:`heedful.runtime.device.resolve_device` before any work)
    and, with ``precision``, ``--precision`` for decoding: the same two on every command
    that runs a model."""
    group = parser.add_argument_group(DEVICE_GROUP_TITLE)
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    if precision:
        group.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                           help=PRECISION_HELP)


def decode_flag(name: str) -> str:
    """The command-line flag of a decoding option: ``beam_size`` -> ``--beam-size``."""
    return "--" + name.replace("_", "-")


def _decode_argument(name: str, annotation: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords of one decoding option, from its type annotation.
    Every default is ``None``: an option not given leaves the run's own decode config."""
    from heedful.decoding.options import field_doc

    doc = field_doc(name).replace("``", "").replace("%", "%%")
    if annotation is bool:
        return {"action": "store_const", "const": True, "default": None, "help": doc}
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        return {"choices": choices, "type": type(choices[0]), "default": None, "help": doc}
    if annotation in (int, float, str):
        return {"type": annotation, "default": None, "help": doc}
    raise TypeError(f"decode option {name!r}: no command-line type for {annotation!r}")


def add_decode_options(parser: argparse.ArgumentParser) -> None:
    """``--quantize`` and one flag per decoding option (``--beam-size`` for ``beam_size``,
    ...), in the order :class:`~heedful.decoding.options.DecodeOptions` declares them."""
    from heedful.decoding.options import DecodeOptions

    parser.add_argument("--quantize", choices=["int8"],
                        help="dynamic int8 quantization of the model for CPU inference")
    group = parser.add_argument_group(DECODE_GROUP_TITLE)
    for name, info in DecodeOptions.model_fields.items():
        group.add_argument(decode_flag(name), dest=name,
                           **_decode_argument(name, info.annotation))


def decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given on the command line (those not ``None``), as keyword
    arguments for :meth:`heedful.Translator.translate`."""
    from heedful.decoding.options import DECODE_OPTION_NAMES

    return {name: getattr(args, name) for name in DECODE_OPTION_NAMES
            if getattr(args, name, None) is not None}


def add_align_options(parser: argparse.ArgumentParser) -> None:
    """The flags that choose how word links are read from attention (align, evaluate)."""
    from heedful.analysis.word_alignment import METHODS

    group = parser.add_argument_group(ALIGN_GROUP_TITLE)
    group.add_argument("--method", choices=METHODS)
    group.add_argument("--align-layer", dest="align_layer", help="layer index or 'mean'")
    group.add_argument("--align-head", dest="align_head", help="head index or 'mean'")
    group.add_argument("--shift", type=int, choices=[0, 1],
                       help="0: the step predicting a word; 1: the step reading it")
    group.add_argument("--threshold", type=float, help="for --method threshold")


def layer_or_mean(value: str, option: str) -> int | None:
    """``"mean"`` -> ``None``, ``"-1"`` -> -1; anything else is a :class:`ConfigError`."""
    if value == "mean":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: give an index or 'mean'") from None


def align_settings(args: argparse.Namespace, run_dir: Path) -> Any:
    """The run's alignment settings (``RUN_DIR/alignment.json``, the head a guided-alignment
    run supervised, or the defaults) with the alignment flags given on the command line
    applied."""
    from dataclasses import replace

    from heedful.analysis.attention_alignment import run_settings

    settings = run_settings(run_dir)
    updates: dict[str, Any] = {}
    if args.method:
        updates["method"] = args.method
    if args.align_layer is not None:
        updates["layer"] = layer_or_mean(args.align_layer, "--align-layer")
    if args.align_head is not None:
        updates["head"] = layer_or_mean(args.align_head, "--align-head")
    if args.shift is not None:
        updates["shift"] = args.shift
    if args.threshold is not None:
        updates["threshold"] = args.threshold
    return replace(settings, **updates)
