"""Model time per frame on the CPU: eager PyTorch, with vidsr's conv + activation fusion (the default), and
optionally torch.compile, at several batch sizes. Results go to docs/BENCHMARKS.md.

    python bench/cpu_fusion.py --model espcn-x2 --size 640x360 --batches 1 2 4 [--compile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import torch

from vidsr.compute.upscaler import Upscaler


def ms_per_frame(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, frames: int) -> float:
    run(x)
    run(x)  # warm: oneDNN primitives, the heap
    calls = max(1, frames // x.shape[0])
    start = time.perf_counter()
    for _ in range(calls):
        run(x)
    return (time.perf_counter() - start) / (calls * x.shape[0]) * 1000


def unfused(model: str, precision: str) -> Upscaler:
    """An Upscaler as it was before vidsr/compute/fusion.py: the fusion step replaced by nothing."""
    with mock.patch("vidsr.compute.upscaler.fuse_conv_activations", lambda *args: 0):
        return Upscaler(model, device="cpu", precision=precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="espcn-x2")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (needs a C++ compiler)")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    variants = {"eager": unfused(args.model, args.precision),
                "fused (default)": Upscaler(args.model, device="cpu", precision=args.precision)}
    if args.compile:
        variants["torch.compile"] = Upscaler(args.model, device="cpu", precision=args.precision, compile=True)
    channels = variants["eager"].descriptor.run_channels
    print(f"{args.model} {width}x{height} {variants['eager'].dtype} on {torch.get_num_threads()} threads: ms/frame")
    for batch in args.batches:
        x = torch.rand(batch, channels, height, width)
        row = {name: ms_per_frame(upscaler.run_model, x, args.frames) for name, upscaler in variants.items()}
        print(f"batch {batch}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in row.items()))


if __name__ == "__main__":
    main()
