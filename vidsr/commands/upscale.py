"""`vidsr upscale INPUT`: upscale a video, an image or a folder of either."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vidsr.batch import upscale_path
from vidsr.commands import add_command, batch_size_arg
from vidsr.media.sink import ENCODERS
from vidsr.zoo import DEFAULT_MODEL


def _encoder_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "upscale", "upscale a video, an image or a folder of them", run)
    parser.add_argument("input", type=Path, help="video or image file, or a folder of them")
    parser.add_argument("-o", "--output", type=Path,
                        help="output file (or folder for a folder input); default: INPUT_x<scale> beside the input")
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL,
                        help=f"bundled model name (see `vidsr models`) or a weight file (default: {DEFAULT_MODEL})")
    parser.add_argument("--strength", type=float, metavar="0..1",
                        help="GAN models with a PSNR partner: interpolate their weights (0: PSNR model, 1: GAN model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="compute precision (default: fp16 on CUDA where the model supports it, else fp32)")
    parser.add_argument("-b", "--batch-size", type=batch_size_arg, default=4,
                        help="frames per model call, or auto: as many as the GPU's free memory holds, up to 16 "
                        "(default: 4)")
    parser.add_argument("--tile", type=int, help="tile size in input pixels (default: whole frames, tiling "
                        "automatically on GPU out-of-memory)")
    parser.add_argument("--tile-pad", type=int, default=16, help="context pixels around each tile (default: 16)")
    parser.add_argument("--max-memory", type=float, metavar="GIB",
                        help="cap CUDA memory use at GIB gibibytes; frames are tiled to fit")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model: seconds (CPU) to a minute (RRDBNet on a GPU) to start, "
                        "then faster: about 2x for ESPCN on the CPU, 1.6x for RRDBNet on a GPU; needs a C++ "
                        "compiler on the CPU")
    parser.add_argument("-c", "--encoder", help=f"video encoder: {', '.join(ENCODERS)}, ... (default: libx264, or "
                        "VP9 for .webm; png/mjpeg/... for image outputs, from the suffix)")
    parser.add_argument("--crf", type=int, help="quality (CRF, or CQ for NVENC); default: 18 for libx264")
    parser.add_argument("--preset", help="encoder preset (e.g. medium, slow for x264; p1-p7 for NVENC)")
    parser.add_argument("--pix-fmt", help="output pixel format (default: the input's, so 10-bit stays 10-bit)")
    parser.add_argument("--encoder-option", type=_encoder_option, action="append", default=[], metavar="KEY=VALUE",
                        help="extra encoder option, repeatable (e.g. x264-params=aq-mode=3)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--hwdec", metavar="DEVICE",
                        help="decode on a device, e.g. cuda (NVDEC); falls back to software with a notice")
    parser.add_argument("--skip-errors", action="store_true", help="drop undecodable frames instead of stopping")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notices")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="vidsr: %(message)s")
    written = upscale_path(
        args.input, args.output, model=args.model, device=args.device, precision=args.precision, tile=args.tile,
        tile_pad=args.tile_pad, max_memory=args.max_memory, compile=args.compile, batch_size=args.batch_size,
        strength=args.strength, encoder=args.encoder, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
        encoder_options=dict(args.encoder_option), overwrite=args.overwrite, skip_errors=args.skip_errors,
        hwdec=args.hwdec, progress=not args.quiet,
    )
    if not args.quiet:
        for path in written:
            print(path)
    return 0
