"""CPU speed of community architectures through the engine, from random-weight checkpoints at their published
sizes (speed does not depend on the weights): Real-ESRGAN Compact x2 (64 features, 16 convs), SPAN x2 (48
features) and SwinIR-light x2 (60 dims, 4 x 6 blocks, window 8). For each: model-only fps (colour conversion,
model, quantisation on decoded planes, default precision) and end-to-end fps (`upscale_video`: decode, model,
libx264 encode) on a generated 640x360 clip.

    nice -n 5 python bench/third_party_cpu.py runs/third_party --frames 8
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import av
import torch

from vidsr import upscale_video
from vidsr.compute.upscaler import Upscaler
from vidsr.media.frames import frame_to_planes, plane_layout, working_format
from vidsr.media.info import probe
from vidsr.tools.sample import ClipSpec, write_clip


def checkpoints(folder: Path) -> dict[str, Path]:
    """The three networks as third-party .pth files (bare state dicts, as published)."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    networks = {
        "compact_x2": lambda: Compact(num_feat=64, num_conv=16, upscale=2),
        "span_x2": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=2),
        "swinir_light_x2": lambda: SwinIR(embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=8,
                                          mlp_ratio=2.0, upscale=2, upsampler="pixelshuffledirect", img_size=64),
    }
    paths = {}
    for name, build in networks.items():
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.pth"
        torch.save(build().state_dict(), paths[name])
    return paths


def model_only_fps(upscaler: Upscaler, clip: Path, repeats: int) -> float:
    """Frames per second of upscale_planes on one decoded frame (batch 1), after one warm-up call."""
    video = probe(clip).video
    layout = plane_layout(working_format(video.pix_fmt))
    with av.open(str(clip)) as container:
        planes = [torch.from_numpy(p)[None] for p in frame_to_planes(next(container.decode(video=0)))]
    upscaler.upscale_planes(planes, layout, video.color)
    start = time.perf_counter()
    for _ in range(repeats):
        upscaler.upscale_planes(planes, layout, video.color)
    return repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the checkpoints and clips go")
    parser.add_argument("--frames", type=int, default=8, help="length of the end-to-end clip (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed model-only calls (default 3)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    clip = write_clip(args.folder / "clip_640x360.mkv", ClipSpec(width=640, height=360, frames=args.frames,
                                                                  options=(("preset", "ultrafast"),)))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, 640x360 -> 1280x720, {args.frames} frames")
    print("| model | params | precision | model only (fps) | end to end (fps) |")
    print("| --- | --- | --- | --- | --- |")
    for name, path in checkpoints(args.folder).items():
        upscaler = Upscaler(path, device="cpu")
        model_fps = model_only_fps(upscaler, clip, args.repeats)
        progress = []
        upscale_video(clip, args.folder / f"{name}.mkv", upscaler=upscaler, overwrite=True, progress=progress.append)
        precision = str(upscaler.dtype).split(".")[-1]
        print(f"| {name} | {upscaler.descriptor.params:,} | {precision} | {model_fps:.3g} | {progress[-1].fps:.3g} |",
              flush=True)


if __name__ == "__main__":
    main()
