"""`vidsr web`: serve the Gradio demo."""

from __future__ import annotations

import argparse

from vidsr.commands import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    from web.cli import add_arguments, run

    add_arguments(add_command(subparsers, "web", "serve the web demo (Gradio) on this machine", run))
