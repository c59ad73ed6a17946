"""`vidsr export MODEL out.onnx`: a model (or a chain) as ONNX, for TensorRT / OpenVINO / ncnn / vs-mlrt."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidsr.commands import add_command, number_arg, size_arg
from vidsr.errors import POSITIVE_WHOLE, OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "export", "export a model (or a chain) to ONNX with dynamic batch and size",
                         run)
    parser.add_argument("model", nargs="+", help="bundled model name or weight file; several run as a chain")
    parser.add_argument("output", type=Path, help="the .onnx file to write")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights and input")
    parser.add_argument("--opset", type=number_arg(POSITIVE_WHOLE), default=17,
                        help="ONNX opset (default: 17); one that torch's exporter cannot write is refused, naming the "
                        "range it writes")
    parser.add_argument("--size", type=size_arg, default=(64, 64), metavar="WxH",
                        help="example input the graph is traced with (default: 64x64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from vidsr.models.export import export_onnx  # torch and onnx load only for this command

    if args.output.exists() and not args.overwrite:
        raise OutputError(f"{args.output}: already exists (use --overwrite to replace it)")
    result = export_onnx(args.model, args.output, fp16=args.fp16, opset=args.opset, size=args.size)
    sizes = "dynamic batch, height and width" if result.dynamic_size else "dynamic batch, fixed height and width"
    print(f"{result.path}: input (N,{result.channels},H,W) -> output x{result.scale}, {sizes}; onnxruntime "
          f"matches PyTorch to {result.max_difference:.1e}")
    return 0
