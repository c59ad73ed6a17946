"""`vidsr` command line: each subcommand is a module in `vidsr.commands` with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from vidsr import commands
from vidsr.errors import VidsrError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidsr", description="Video super-resolution toolkit.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"vidsr.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("vidsr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`vidsr probe x | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE
    except VidsrError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"vidsr: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
