"""CLI subcommands. Each module defines `register(subparsers)` and builds its parser with `add_command`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help: str, func: Callable[[argparse.Namespace], int | None]
) -> argparse.ArgumentParser:
    """Add a subcommand parser that carries the common options (`--debug`) and dispatches to `func`."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.set_defaults(func=func)
    return parser


def batch_size_arg(text: str) -> int | str:
    """`--batch-size`: a whole number, or "auto" (as many frames as the GPU's free memory holds)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None
