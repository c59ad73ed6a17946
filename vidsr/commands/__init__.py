"""CLI subcommands. Each module defines `register(subparsers)` and builds its parser with `add_command`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vidsr.errors import POSITIVE_WHOLE, NumberRange


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help: str, func: Callable[[argparse.Namespace], int | None]
) -> argparse.ArgumentParser:
    """Add a subcommand parser that carries the common options (`--debug`) and dispatches to `func`."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.set_defaults(func=func)
    return parser


def number_arg(allowed: NumberRange) -> Callable[[str], float]:
    """An argparse type: a number in `allowed` (NaN, infinities and numbers out of range are refused, never
    taken for "off")."""

    def parse(text: str) -> float:
        try:
            value = int(text) if allowed.whole else float(text)
        except ValueError:
            value = None
        if not allowed.holds(value):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def batch_size_arg(text: str) -> int | str:
    """`--batch-size`: a whole number of at least 1, or "auto" (as many frames as the GPU's free memory holds)."""
    if text == "auto":
        return text
    try:
        return number_arg(POSITIVE_WHOLE)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected {POSITIVE_WHOLE}, or 'auto', got {text!r}") from None


def size_arg(text: str) -> tuple[int, int]:
    """`WxH`, both whole numbers of at least 1."""
    width, x, height = text.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 64x64, got {text!r}")
    return int(width), int(height)
