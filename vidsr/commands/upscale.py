"""`vidsr upscale INPUT`: upscale a video, an image or a folder of either."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from vidsr.commands import add_command, batch_size_arg, number_arg
from vidsr.errors import FRACTION, NON_NEGATIVE, NON_NEGATIVE_WHOLE, POSITIVE, POSITIVE_WHOLE
from vidsr.jobs import GPUS_PER_WORKER
from vidsr.media import ENCODERS, HOLD_LEVELS, NOISE_LEVELS
from vidsr.models.zoo import DEFAULT_MODEL


def _encoder_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _rate(text: str) -> Fraction:
    from vidsr.media.stamps import parse_rate

    try:
        rate = parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert rate is not None
    return rate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "upscale", "upscale a video, an image or a folder of them", run)
    parser.add_argument("input", type=Path, help="video or image file, or a folder of them")
    parser.add_argument("-o", "--output", type=Path,
                        help="output file (or folder for a folder input); default: INPUT_x<scale> beside the input")
    parser.add_argument("-m", "--model", action="append",
                        help="bundled model name (see `vidsr models`) or a weight file, vidsr's or a community one "
                        f"(ESRGAN, SPAN, SwinIR, ...: `vidsr models --architectures`); repeat to chain models in "
                        f"one pass, e.g. -m dejpeg_1x.pth -m 2x.pth (default: {DEFAULT_MODEL})")
    parser.add_argument("--strength", type=number_arg(FRACTION), metavar="0..1",
                        help="GAN models with a PSNR partner: interpolate their weights (0: PSNR model, 1: GAN model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="compute precision (default: fp16 on CUDA where the model supports it, else fp32)")
    parser.add_argument("-b", "--batch-size", type=batch_size_arg,
                        help="frames per model call, or auto: as many as the GPU's free memory holds, up to 16 "
                        "(default: 4 on CUDA, 1 on the CPU)")
    parser.add_argument("--tile", type=number_arg(POSITIVE_WHOLE),
                        help="tile size in input pixels (default: whole frames, tiling automatically on GPU "
                        "out-of-memory)")
    parser.add_argument("--tile-pad", type=number_arg(NON_NEGATIVE_WHOLE), default=16,
                        help="context pixels around each tile (default: 16)")
    parser.add_argument("--max-memory", type=number_arg(POSITIVE), metavar="GIB",
                        help="cap CUDA memory use at GIB gibibytes; frames are tiled to fit")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model: seconds (CPU) to a minute (RRDBNet on a GPU) to start, "
                        "then faster: about 5%% for ESPCN on the CPU (its activations are fused anyway), 1.6x "
                        "for RRDBNet on a GPU; needs a C++ compiler on the CPU")
    parser.add_argument("-c", "--encoder", help=f"video encoder: {', '.join(ENCODERS)}, ... (default: libx264, or "
                        "VP9 for .webm; png/mjpeg/... for image outputs, from the suffix)")
    parser.add_argument("--crf", type=number_arg(NON_NEGATIVE_WHOLE),
                        help="quality (CRF, or CQ for NVENC); default: 18 for libx264")
    parser.add_argument("--preset", help="encoder preset (e.g. medium, slow for x264; p1-p7 for NVENC)")
    parser.add_argument("--pix-fmt", help="output pixel format (default: the input's, so 10-bit stays 10-bit)")
    parser.add_argument("--encoder-option", type=_encoder_option, action="append", default=[], metavar="KEY=VALUE",
                        help="extra encoder option, repeatable (e.g. x264-params=aq-mode=3)")
    parser.add_argument("--audio", choices=["copy", "reencode", "drop"], default="copy",
                        help="audio streams: copy (default; re-encoded where the container cannot hold them), "
                        "reencode to the container's default codec, or drop")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--hwdec", metavar="DEVICE",
                        help="decode on a device, e.g. cuda (NVDEC); falls back to software with a notice")
    parser.add_argument("--skip-errors", action="store_true", help="drop undecodable frames instead of stopping")
    parser.add_argument("--assume-fps", type=_rate, metavar="RATE",
                        help="take the video as constant-rate at RATE (24, 29.97, 24000/1001) and stamp its frames "
                        "in order, whatever their timestamps (as FFmpeg's input -r): for files whose frames "
                        "repeat one timestamp; not cut into chunks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notices")
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--reuse-held-frames", dest="reuse_held", type=number_arg(HOLD_LEVELS), nargs="?",
                      const=NOISE_LEVELS, default=True, metavar="LEVELS",
                      help="a frame that repeats the last one upscaled gets its output again instead of the model "
                      "(held drawings, slides). Default: exact repeats, which changes no picture; with LEVELS: "
                      "frames within that many 8-bit levels in every sample, for codec noise "
                      f"(without a value: {NOISE_LEVELS:g}; docs/BENCHMARKS.md has the measurements)")
    held.add_argument("--no-reuse-held-frames", dest="reuse_held", action="store_false",
                      help="run every frame through the model")
    scale_out = parser.add_argument_group("chunks and scaling out")
    scale_out.add_argument("--chunk-seconds", type=number_arg(NON_NEGATIVE), metavar="S",
                           help="cut videos into chunks of about S seconds at keyframes, kept in .NAME.vidsr/ "
                           "beside the output so that a rerun resumes (default: 60 for inputs over 5 minutes, "
                           "else off; 0: off)")
    scale_out.add_argument("--no-resume", action="store_true", help="ignore finished chunks of an earlier run")
    scale_out.add_argument("--workers", type=number_arg(POSITIVE_WHOLE), metavar="N",
                           help="run chunks and files on N Ray workers (default with --cluster: one per GPU); "
                           "needs pip install 'vidsr[ray]'")
    scale_out.add_argument("--cluster", metavar="ADDRESS",
                           help="an existing Ray cluster: its head's HOST:6379 (as `ray start --head` prints it), "
                           "ray://HOST:10001 (Ray's client) or auto (one started on this machine)")
    scale_out.add_argument("--cluster-token", metavar="TOKEN",
                           help="the cluster's token, where it has token authentication (Ray 2.59+ by default; "
                           "`ray get-auth-token` on the head prints it); RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH in "
                           "the environment keep it out of the process list")
    scale_out.add_argument("--gpus-per-worker", type=number_arg(GPUS_PER_WORKER), default=1.0, metavar="G",
                           help="GPUs per worker, up to 1 (0.5: two workers share a GPU; default: 1)")
    scale_out.add_argument("--shared-path", action="store_true",
                           help="workers read the input at the same path instead of receiving its packets")


def _scale_out(args: argparse.Namespace) -> dict:
    """Ray options, only when asked for: without them, nothing about Ray is passed (or imported)."""
    if not (args.workers or args.cluster):
        return {}
    return {"workers": args.workers, "cluster": args.cluster, "cluster_token": args.cluster_token,
            "gpus_per_worker": args.gpus_per_worker, "shared_path": args.shared_path}


def run(args: argparse.Namespace) -> int:
    from vidsr.compute import heap

    heap.share_one_arena()  # this process is the engine's alone: its threads may share the warm heap
    from vidsr.jobs.batch import upscale_path  # torch and PyAV: loaded only when the command runs

    written = upscale_path(
        args.input, args.output, model=args.model or DEFAULT_MODEL, device=args.device, precision=args.precision,
        tile=args.tile, tile_pad=args.tile_pad, max_memory=args.max_memory, compile=args.compile,
        batch_size=args.batch_size, strength=args.strength,
        encoder=args.encoder, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
        encoder_options=dict(args.encoder_option), audio=args.audio, overwrite=args.overwrite,
        skip_errors=args.skip_errors, hwdec=args.hwdec, progress=not args.quiet, chunk_seconds=args.chunk_seconds,
        resume=not args.no_resume, reuse_held=args.reuse_held, assume_fps=args.assume_fps,
        **_scale_out(args),
    )
    if not args.quiet:
        for path in written:
            print(path)
    return 0
