"""`vidsr blend A B --alpha 0.8 -o out.safetensors`: network interpolation of two models."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidsr.commands import add_command, number_arg
from vidsr.errors import FRACTION, OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "blend",
        "blend the weights of two models of one architecture (ESRGAN network interpolation)",
        run,
    )
    parser.add_argument("a", help="first model: bundled name or weight file (alpha 0 gives this one)")
    parser.add_argument("b", help="second model: bundled name or weight file (alpha 1 gives this one)")
    parser.add_argument("--alpha", type=number_arg(FRACTION), default=0.8,
                        help="weight of B (default 0.8, as in ESRGAN)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from vidsr.models.zoo import blend_files

    if args.output.suffix.lower() != ".safetensors":
        raise OutputError(f"{args.output}: blend writes .safetensors files")
    if args.output.exists() and not args.overwrite:
        raise OutputError(f"{args.output} exists (use --overwrite to replace it)")
    path = blend_files(args.a, args.b, args.alpha, args.output)
    print(f"wrote {path} ({1 - args.alpha:g} x {args.a} + {args.alpha:g} x {args.b})")
    return 0
