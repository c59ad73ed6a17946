"""`vidsr bench`: stage-by-stage throughput against a naive frame loop, on any device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidsr.commands import add_command, batch_size_arg, number_arg, size_arg
from vidsr.errors import NON_NEGATIVE_WHOLE, POSITIVE, POSITIVE_WHOLE
from vidsr.models.zoo import DEFAULT_MODEL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "bench", "measure decode/model/encode throughput vs a naive frame loop", run)
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL)
    parser.add_argument("--size", type=size_arg, default=(640, 360), metavar="WxH",
                        help="WIDTHxHEIGHT of the generated clip (default 640x360)")
    parser.add_argument("--frames", type=number_arg(POSITIVE_WHOLE), default=48,
                        help="length of the generated clip (default 48)")
    parser.add_argument("--input", type=Path, help="benchmark this clip instead of a generated one")
    parser.add_argument("-b", "--batch-size", type=batch_size_arg,
                        help="frames per model call, or auto (default: 4 on CUDA, 1 on the CPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("-c", "--encoder", default="libx264")
    parser.add_argument("--crf", type=number_arg(NON_NEGATIVE_WHOLE),
                        help="encoder quality, as in vidsr upscale (default: vidsr's per encoder)")
    parser.add_argument("--preset", help="encoder preset, as in vidsr upscale (default: the encoder's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (the naive loop stays eager)")
    parser.add_argument("--tile", type=number_arg(POSITIVE_WHOLE),
                        help="tile size in input pixels (default: whole frames, tiled on OOM)")
    parser.add_argument("--max-memory", type=number_arg(POSITIVE), metavar="GIB",
                        help="cap on CUDA memory in GiB (tiles shrink to fit)")
    parser.add_argument("--hwdec", help="decode on this device in the engine run (e.g. cuda for NVDEC)")
    parser.add_argument("--remeasure-peak", action="store_true",
                        help="measure the CPU's convolution peak again instead of reading it from the cache "
                             "(the first measurement was taken while the CPU was busy)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from vidsr.tools.bench import run_bench

    width, height = args.size
    result = run_bench(args.model, width, height, args.frames, args.batch_size, args.precision, args.device,
                       args.encoder, args.input, args.compile, args.tile, args.max_memory, args.hwdec,
                       args.crf, args.preset, args.remeasure_peak)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0
