"""`vidsr` command line: each subcommand is a module in `vidsr.commands` with `register(subparsers)`."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

from vidsr import commands
from vidsr.errors import VidsrError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidsr", description="Video super-resolution toolkit.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"vidsr.commands.{info.name}").register(subparsers)
    return parser


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


def _notices_to_stderr(quiet: bool) -> None:
    """Notices (warnings; errors only with -q) as `vidsr: ...` lines on stderr, one line each. On the root
    logger, where the progress bar's `logging_redirect_tqdm` finds the handler and prints above the bar."""
    root = logging.getLogger()
    if root.handlers:  # a program that calls main() itself has set up logging its way
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter("vidsr: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.WARNING)


class _Terminated(BaseException):
    """SIGTERM (kill, timeout, a service stopping) unwinds like Ctrl-C, so no partial output is left."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _notices_to_stderr(getattr(args, "quiet", False))
    try:
        with _sigterm_unwinds():
            return args.func(args) or 0
    except KeyboardInterrupt:
        print("vidsr: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("vidsr: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # the reader went away (`vidsr probe x | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE
    except VidsrError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"vidsr: error: {one_line(str(exc))}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The `vidsr` command: `main`, then the usual exit less the garbage collections that tear down the
    interpreter, which with torch loaded walk its million objects for a second or more (after `import torch`
    alone, on 2 cores: 3.2-5.8 s to exit, 3.3-3.8 s with the objects frozen, 3.0-3.1 s with `os._exit`).
    Exit handlers and threads are still waited for; frozen objects are freed with the process."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
