"""Held frames (vidsr/media/holds.py): where the threshold lies, and what reuse gains end to end.

Every clip and picture here is generated with numpy and encoded with PyAV's libx264 (there is no real footage
on the project's machine):

    python bench/reuse.py threshold      # codec noise between held frames against the smallest real motion
    python bench/reuse.py speed [-m MODEL] [--size WxH] [--frames N] [--rounds R]

`threshold` encodes a held picture (a 1/f "natural" texture, flat cel shapes with dark outlines) at several
CRFs and keyframe intervals and measures the decoded difference between its frames, then the smallest
motions (1-pixel pans, a small dot moving, fade steps) coded the same way. Differences are the largest
absolute difference over every plane (Y, U, V) in 8-bit levels, as the engine compares.

`speed` upscales three clips: cel animation on twos and threes, a screen recording (slides held for seconds,
a cursor moving part of the time) and live-like footage (a pan with sensor noise), each encoded with libx264
at CRF 18, and the cel clip also losslessly (its holds as drawn). For each: the fraction of frames reused,
the end-to-end time with and without reuse (alternating, medians), the largest difference from the run
without reuse (PSNR over all planes, in dB, of the worst frame; FFV1 outputs, so that only reuse differs)
and the static-pixel flicker: the mean absolute change of output luma between consecutive frames over the
pixels that do not change in the clip as generated (vidsr.quality.realworld measures flicker the same way),
and over the frame pairs whose generated pictures are the same (the shimmer of a held picture).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from vidsr import Progress, upscale_video
from vidsr.compute.upscaler import Upscaler
from vidsr.media import NOISE_LEVELS
from vidsr.media.frames import frame_to_planes
from vidsr.media.holds import HeldFrames

Planes = list[np.ndarray]
MODES = {"off": False, "exact": True, f"{NOISE_LEVELS:g} level": NOISE_LEVELS}


# --- pictures and clips ---------------------------------------------------------------------------------------

def pink(height: int, width: int, seed: int) -> np.ndarray:
    """1/f noise, zero mean and unit variance: the spectrum of natural images."""
    spectrum = np.fft.fft2(np.random.default_rng(seed).normal(size=(height, width)))
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    image = np.real(np.fft.ifft2(spectrum / np.maximum(radius, 1 / max(height, width))))
    return (image - image.mean()) / image.std()


def natural(height: int, width: int, seed: int = 0) -> np.ndarray:
    shared = pink(height, width, seed + 9)
    rgb = np.stack([0.6 * shared + 0.4 * pink(height, width, seed + c) for c in range(3)], axis=-1)
    return (np.clip(0.5 + 0.18 * rgb, 0, 1) * 255).astype(np.uint8)


def cel(height: int, width: int, seed: int = 0, offset: int = 0) -> np.ndarray:
    """Flat shapes with dark outlines on a flat background; `offset` moves them."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (200, 220, 240)
    yy, xx = np.mgrid[0:height, 0:width]
    for k in range(12):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius, colour = rng.integers(height // 24, height // 4), rng.integers(0, 255, 3)
        distance = np.hypot(xx - cx - offset * (1 + k % 3), yy - cy)
        image[distance < radius] = colour
        image[np.abs(distance - radius) < 1.5] = (20, 20, 20)
    return image


def on_twos_and_threes(count: int) -> list[int]:
    """The drawing shown at each frame: held for 2, 3, 2, 3, ... frames."""
    drawings: list[int] = []
    while len(drawings) < count:
        drawings += [len(set(drawings))] * (2 + len(set(drawings)) % 2)
    return drawings[:count]


def cel_clip(count: int, height: int, width: int) -> list[np.ndarray]:
    return [cel(height, width, offset=3 * d) for d in on_twos_and_threes(count)]


def screen_clip(count: int, height: int, width: int) -> list[np.ndarray]:
    """Slides of text lines, a new one every 2 s at 30 fps; the cursor moves in the first half of each."""
    frames, rng = [], np.random.default_rng(5)
    slides = []
    for _ in range(count // 60 + 1):
        slide = np.full((height, width, 3), 250, np.uint8)
        slide[: height // 8] = (40, 70, 140)  # title bar
        for row in range(height // 6, height - 12, 14):
            x = 20
            while x < width - 60:
                word = int(rng.integers(12, 50))
                slide[row:row + 8, x:x + word] = 30
                x += word + 7
        slides.append(slide)
    arrow = np.tri(16, 11, dtype=bool)  # a cursor-sized triangle
    for i in range(count):
        frame = slides[i // 60].copy()
        t = min(i % 60, 30)
        x, y = width // 10 + t * width // 60, height // 6 + t * height // 60
        frame[y:y + 16, x:x + 11][arrow] = 0
        frames.append(frame)
    return frames


def live_clip(count: int, height: int, width: int) -> list[np.ndarray]:
    """A 1.5-pixel-per-frame pan over a natural texture, with sensor noise (sigma 2 levels) on every frame."""
    texture = natural(2 * height, 2 * width + 3 * count + 8, seed=3).astype(np.float32)
    rng = np.random.default_rng(7)
    frames = []
    for i in range(count):
        crop = texture[:, 3 * i:3 * i + 2 * width]
        half = crop.reshape(height, 2, width, 2, 3).mean(axis=(1, 3))  # 3 px at double size: 1.5 px
        frames.append(np.clip(half + rng.normal(0, 2, half.shape), 0, 255).astype(np.uint8))
    return frames


def encode(frames: list[np.ndarray], path: Path | io.BytesIO, options: dict[str, str], rate: int = 24,
           container: str = "matroska") -> None:
    with av.open(path, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=rate, options=options)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def decoded(source: Path | io.BytesIO) -> list[Planes]:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    with av.open(source) as container:
        return [[p.copy() for p in frame_to_planes(f)] for f in container.decode(video=0)]


def coded(frames: list[np.ndarray], crf: int, keyint: int = 250) -> list[Planes]:
    buffer = io.BytesIO()
    encode(frames, buffer, {"crf": str(crf), "g": str(keyint)})
    return decoded(buffer)


def levels(a: Planes, b: Planes) -> float:
    """The largest absolute difference over every plane, in 8-bit levels (8-bit planes here)."""
    return max(float(np.abs(x.astype(np.int32) - y).max()) for x, y in zip(a, b, strict=True))


def psnr(a: Planes, b: Planes) -> float:
    squared = sum(float(((x.astype(np.float64) - y) ** 2).sum()) for x, y in zip(a, b, strict=True))
    mse = squared / sum(x.size for x in a)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def reused_fraction(frames: list[Planes], threshold: float) -> float:
    holds = HeldFrames(threshold, 8)
    return sum(holds.held(f) for f in frames) / (len(frames) - 1)  # the first frame is the first reference


# --- threshold ------------------------------------------------------------------------------------------------

THRESHOLDS = (0, 1, 2, 4, 8, 16)


def threshold_report(height: int, width: int) -> None:
    pictures = {"natural": natural(height, width), "cel": cel(height, width)}
    print(f"Codec noise: one picture held 48 frames, libx264 medium, {width}x{height}, decoded. Per frame: "
          "largest difference from the frame before, in levels; reused: the fraction of held frames within "
          f"the threshold of the last one upscaled, at thresholds {THRESHOLDS} levels.\n")
    print("| picture | CRF | keyint | frames exactly equal | largest difference | lowest PSNR | reused at "
          + " / ".join(map(str, THRESHOLDS)) + " |")
    print("|---|---|---|---|---|---|---|")
    for name, picture in pictures.items():
        for keyint in (250, 24):
            for crf in (18, 23, 28, 35):
                frames = coded([picture] * 48, crf, keyint)
                steps = [levels(b, a) for a, b in zip(frames, frames[1:], strict=False)]
                low = min(psnr(b, a) for a, b in zip(frames, frames[1:], strict=False))
                reused = " / ".join(f"{reused_fraction(frames, t):.2f}" for t in THRESHOLDS)
                print(f"| {name} | {crf} | {keyint} | {steps.count(0)}/{len(steps)} | {max(steps):.0f} | "
                      f"{low:.1f} dB | {reused} |", flush=True)
    print("\nThe smallest motion: the smallest largest-difference between consecutive frames (and the highest "
          "PSNR), as generated and coded at CRF 18 / 28 / 35.\n")
    print("| motion | as generated | CRF 18 | CRF 28 | CRF 35 |")
    print("|---|---|---|---|---|")
    for name, frames in motions(height, width).items():
        raw = [frame_to_planes(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p"))
               for f in frames]
        cells = [smallest_step(raw)] + [smallest_step(coded(frames, crf)) for crf in (18, 28, 35)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def smallest_step(frames: list[Planes]) -> str:
    pairs = list(zip(frames, frames[1:], strict=False))
    return f"{min(levels(b, a) for a, b in pairs):.0f} ({max(psnr(b, a) for a, b in pairs):.1f} dB)"


def motions(height: int, width: int) -> dict[str, list[np.ndarray]]:
    big = {"natural": natural(height + 4, width + 4), "cel": cel(height + 4, width + 4)}
    ramp = np.linspace(60, 190, width + 4)[None, :, None]
    big["smooth gradient"] = np.broadcast_to(ramp, (height + 4, width + 4, 3)).astype(np.uint8)

    def pan(image: np.ndarray) -> list[np.ndarray]:
        return [image[2:2 + height, 2 + i % 2:2 + i % 2 + width].copy() for i in range(6)]

    def dot(image: np.ndarray, size: int, value: int) -> list[np.ndarray]:
        frames = []
        for i in range(6):
            frame = image[2:2 + height, 2:2 + width].copy()
            frame[height // 3:height // 3 + size, width // 3 + i:width // 3 + i + size] = value
            frames.append(frame)
        return frames

    def fade(image: np.ndarray, seconds: int) -> list[np.ndarray]:
        steps = 24 * seconds
        base = image[2:2 + height, 2:2 + width].astype(np.float64)
        return [np.round(base * (1 - (i + steps // 2) / steps)).astype(np.uint8) for i in range(6)]

    cases: dict[str, list[np.ndarray]] = {f"1-pixel pan, {k}": pan(v) for k, v in big.items()}
    cases |= {"3x3 white dot moving 1 px, natural": dot(big["natural"], 3, 255),
              "3x3 white dot moving 1 px, cel": dot(big["cel"], 3, 255),
              "2x2 mid-grey dot moving 1 px, natural": dot(big["natural"], 2, 128)}
    cases |= {f"fade to black over {s} s at 24 fps, natural": fade(big["natural"], s) for s in (1, 2, 4)}
    return cases


# --- speed ----------------------------------------------------------------------------------------------------

CLIPS: dict[str, tuple[Callable[[int, int, int], list[np.ndarray]], int, dict[str, str]]] = {
    "cel animation on twos and threes, CRF 18": (cel_clip, 24, {"crf": "18"}),
    "the same, lossless (as drawn)": (cel_clip, 24, {"qp": "0"}),
    "screen recording, CRF 18": (screen_clip, 30, {"crf": "18"}),
    "live-like (pan + sensor noise), CRF 18": (live_clip, 24, {"crf": "18"}),
}


def speed_report(model: str, height: int, width: int, count: int, rounds: int) -> None:
    upscaler = Upscaler(model, device="cpu")
    print(f"Model {model}, {width}x{height} -> x{upscaler.scale}, {count} frames, CPU, {rounds} alternating "
          "rounds (medians), output libx264 (vidsr's default settings) for times, FFV1 for differences.\n")
    print("| clip | reuse | frames reused | end to end | speed-up | worst frame against no reuse | "
          "static-pixel flicker | flicker of held pictures |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vidsr-reuse-") as folder:
        root = Path(folder)
        for name, (make, rate, options) in CLIPS.items():
            clean = make(count, height, width)
            source = root / "in.mkv"
            encode(clean, source, options, rate)
            times = time_modes(source, root, upscaler, rounds)
            runs = {mode: run(source, root / f"{i}.mkv", upscaler, value, "ffv1")
                    for i, (mode, value) in enumerate(MODES.items())}
            frames = {mode: decoded(output) for mode, (_, output, _) in runs.items()}
            still = static_pixels(clean, upscaler.scale)
            for mode in MODES:
                reused = runs[mode][2]
                worst = min(psnr(a, b) for a, b in zip(frames[mode], frames["off"], strict=True))
                difference = "identical" if worst == float("inf") else f"{worst:.1f} dB"
                flicker = static_flicker(frames[mode], still)
                print(f"| {name} | {mode} | {reused:.0%} | {times[mode]:.2f} s | "
                      f"{times['off'] / times[mode]:.2f}x | {difference} | {flicker} |", flush=True)


def run(source: Path, output: Path, upscaler: Upscaler, reuse: bool | float,
        encoder: str | None = None) -> tuple[float, Path, float]:
    """Seconds, the output, and the fraction of frames reused, as the engine reports it."""
    reports: list[Progress] = []
    start = time.perf_counter()
    upscale_video(source, output, upscaler=upscaler, reuse_held=reuse, encoder=encoder, overwrite=True,
                  progress=reports.append)
    return time.perf_counter() - start, output, reports[-1].reused / reports[-1].frames


def time_modes(source: Path, root: Path, upscaler: Upscaler, rounds: int) -> dict[str, float]:
    run(source, root / "warm.mkv", upscaler, False)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, value in MODES.items():
            times[mode].append(run(source, root / "timed.mkv", upscaler, value)[0])
    return {mode: statistics.median(values) for mode, values in times.items()}


def static_pixels(clean: list[np.ndarray], scale: int) -> np.ndarray:
    """Per consecutive pair of generated frames, the output pixels whose input pixel did not change."""
    still = np.stack([np.all(a == b, axis=-1) for a, b in zip(clean, clean[1:], strict=False)])
    return still.repeat(scale, axis=1).repeat(scale, axis=2)


def static_flicker(frames: list[Planes], still: np.ndarray) -> str:
    """In levels: over every static pixel, and over the frame pairs whose generated pictures are the same
    (a held picture's shimmer); none where under 1% of the pixels are static (sensor noise)."""
    if still.mean() < 0.01:
        return "no static pixels | no held picture"
    change = np.abs(np.diff(np.stack([f[0].astype(np.float32) for f in frames]), axis=0))
    held = still.all(axis=(1, 2))
    return f"{change[still].mean():.4f} ({still.mean():.0%} static) | {change[held].mean():.4f} ({held.sum()} pairs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["threshold", "speed"])
    parser.add_argument("-m", "--model", default="srvgg-x2-video")
    parser.add_argument("--size", default="640x360", help="WxH")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    if args.part == "threshold":
        threshold_report(height, width)
    else:
        speed_report(args.model, height, width, args.frames, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
