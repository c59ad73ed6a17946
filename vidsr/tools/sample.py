"""Synthetic test clips made with PyAV: odd sizes, VFR, 8/10-bit, colour tags, AAC audio, SRT subtitles.

Used by `make demo` (python -m vidsr.tools.sample OUT) and by the test suite.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidsr.media.frames import plane_layout, planes_to_frame

# FFmpeg scale filter names for H.273 matrix codes (untagged clips are converted as BT.601).
_SCALE_MATRIX = {1: "bt709", 5: "bt470", 6: "smpte170m", 9: "bt2020", 10: "bt2020"}


@dataclass(frozen=True)
class ClipSpec:
    width: int = 160
    height: int = 96
    frames: int = 12
    rate: Fraction = Fraction(24)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    matrix: int = 1  # H.273 colour tags
    primaries: int = 1
    transfer: int = 1
    full_range: bool = False
    vfr: bool = False  # irregular frame durations
    audio: bool = False  # AAC stereo 48 kHz
    subtitles: bool = False  # SRT cues (mkv)
    time_base: Fraction = Fraction(1, 90000)
    options: tuple[tuple[str, str], ...] = (("crf", "12"),)


def frame_times(spec: ClipSpec) -> list[Fraction]:
    """Presentation times in seconds; VFR clips alternate short and long frames."""
    step = 1 / spec.rate
    times, t = [], Fraction(0)
    for i in range(spec.frames):
        times.append(t)
        t += step * (Fraction(1, 2) if spec.vfr and i % 3 == 0 else Fraction(3, 2) if spec.vfr and i % 3 == 1 else 1)
    return times


def pattern_frame(width: int, height: int, t: int) -> np.ndarray:
    """A moving RGB float pattern with sharp edges, rings, fine lines and smooth gradients."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * (0.4 + 0.05 * np.sin(t / 3)), height * 0.5
    rings = 0.5 + 0.5 * np.cos(np.hypot(x - cx, y - cy) ** 2 / (6.0 * max(width, height)))
    bars = ((x + 2 * t) // 6 % 2).astype(np.float32)
    square = ((abs(x - width * 0.7 - t) < width * 0.12) & (abs(y - height * 0.4) < height * 0.2)).astype(np.float32)
    r = 0.6 * rings + 0.4 * square
    g = np.where(y < height * 0.3, bars, x / width)
    b = 0.5 * (1 - rings) + 0.5 * y / height
    return np.stack([r, g, b], axis=-1).clip(0, 1)


def rgb_to_frame(rgb: np.ndarray, spec: ClipSpec) -> av.VideoFrame:
    """Float RGB -> frame of spec.pix_fmt using the tagged matrix and range (via the engine's own colour code)."""
    import torch

    from vidsr.color import rgb_to_planes
    from vidsr.media.info import ColorInfo

    layout = plane_layout(spec.pix_fmt)
    color = ColorInfo(spec.matrix, spec.primaries, spec.transfer, spec.full_range)
    planes = rgb_to_planes(torch.from_numpy(rgb).permute(2, 0, 1)[None], layout, color)
    return planes_to_frame([p[0].numpy() for p in planes], spec.pix_fmt)


def testsrc_frames(spec: ClipSpec) -> Iterator[av.VideoFrame]:
    """FFmpeg's moving testsrc2 pattern, converted to spec.pix_fmt with the spec's matrix and range."""
    graph = av.filter.Graph()
    chain = [
        graph.add("testsrc2", f"size={spec.width}x{spec.height}:rate={spec.rate}"),
        graph.add("scale", f"out_color_matrix={_SCALE_MATRIX.get(spec.matrix, 'bt601')}:"
                           f"out_range={'pc' if spec.full_range else 'tv'}"),
        graph.add("format", f"pix_fmts={spec.pix_fmt}"),
        graph.add("buffersink"),
    ]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    for _ in range(spec.frames):
        yield graph.pull()


def write_clip(path: str | Path, spec: ClipSpec = ClipSpec(), frames: Sequence[np.ndarray] | None = None) -> Path:
    """Write a clip; `frames` (float RGB HxWx3) replaces FFmpeg's testsrc2 pattern when given."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        video = out.add_stream(spec.codec, rate=spec.rate)
        ctx = video.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = spec.width, spec.height, spec.pix_fmt
        ctx.time_base = video.time_base = spec.time_base
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = spec.matrix, spec.primaries, spec.transfer
        ctx.color_range = 2 if spec.full_range else 1
        ctx.options = dict(spec.options)
        audio = out.add_stream("aac", rate=48000, layout="stereo") if spec.audio else None
        subs = out.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if spec.subtitles else None
        times = frame_times(spec)
        pictures = (rgb_to_frame(rgb, spec) for rgb in frames) if frames is not None else testsrc_frames(spec)
        for t, frame in zip(times, pictures, strict=False):
            frame.pts, frame.time_base = int(t / spec.time_base), spec.time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        end = times[-1] + 1 / spec.rate
        if audio is not None:
            _write_audio(out, audio, float(end))
        if subs is not None:
            _write_subtitles(out, subs, float(end))
    return path


def _write_audio(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate, size = 48000, 1024
    total = int(seconds * rate)
    for start in range(0, total, size):
        n = min(size, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        tone = 0.2 * np.sin(2 * np.pi * 440 * t)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_subtitles(out: av.container.OutputContainer, stream: av.stream.Stream, seconds: float) -> None:
    cue = Fraction(seconds) / 2
    for i in range(2):
        packet = av.Packet(f"vidsr sample cue {i + 1}".encode())
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = int(i * cue * 1000)
        packet.duration = int(cue * 1000)
        out.mux(packet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic sample clip (VFR-free, AAC audio, subtitles).")
    parser.add_argument("output", type=Path, help="output file (.mkv keeps the subtitles)")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists (use --overwrite)")
    width, height = (int(v) for v in args.size.split("x"))
    mkv = args.output.suffix.lower() == ".mkv"
    write_clip(args.output, ClipSpec(width=width, height=height, frames=args.frames, audio=True, subtitles=mkv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
