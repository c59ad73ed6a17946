"""`vidsr models`: the bundled models with their cost and measured quality."""

from __future__ import annotations

import argparse

from vidsr.commands import add_command
from vidsr.zoo import list_models, model_card


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "models",
                         "List the bundled models (params, GMACs per 1080p frame, Set5/Set14 PSNR).", run)
    parser.add_argument("--card", metavar="MODEL", help="print the markdown model card of a model instead")


def _db(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def run(args: argparse.Namespace) -> int:
    if args.card:
        print(model_card(args.card), end="")
        return 0
    print(f"{'name':<22} {'arch':<9} {'scale':>5} {'color':>5} {'params':>9} {'GMACs/1080p':>12} "
          f"{'Set5':>6} {'Set14':>6}")
    for info in list_models():
        print(f"{info.name:<22} {info.arch:<9} {'x' + str(info.scale):>5} {info.color:>5} {info.params:>9,} "
              f"{info.gmacs_1080p:>12.1f} {_db(info.set5_psnr):>6} {_db(info.set14_psnr):>6}")
    return 0
