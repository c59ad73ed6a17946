"""Held frames (vidsr/media/holds.py): a frame that repeats the last one upscaled reuses its output.

Clips are written losslessly (FFV1), so that the holds written are the holds decoded; the model is counted by
wrapping `Upscaler.upscale_planes`, which every path (CLI engine, chunks, VapourSynth) calls per batch."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidsr import upscale_video
from vidsr.compute.upscaler import Upscaler
from vidsr.errors import InputError
from vidsr.media import NOISE_LEVELS
from vidsr.media.chunks import keyframe_times, plan_chunks
from vidsr.media.frames import frame_to_planes, planes_to_frame
from vidsr.media.holds import HeldFrames, reuse_threshold
from vidsr.tools.sample import pattern_frame

WIDTH, HEIGHT = 48, 32


@pytest.fixture
def model_frames(monkeypatch) -> list[int]:
    """The number of frames each model call received, in order."""
    calls: list[int] = []
    upscale_planes = Upscaler.upscale_planes

    def counted(self, planes, *args, **kwargs):
        calls.append(int(planes[0].shape[0]))
        return upscale_planes(self, planes, *args, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale_planes", counted)
    return calls


def picture(t: int, pix_fmt: str) -> list[np.ndarray]:
    """The planes of a distinct test picture for each `t`, in `pix_fmt`."""
    rgb = av.VideoFrame.from_ndarray((pattern_frame(WIDTH, HEIGHT, t) * 255).astype(np.uint8), format="rgb24")
    return [p.copy() for p in frame_to_planes(rgb.reformat(format=pix_fmt))]


def write_planes(path: Path, pictures: list[list[np.ndarray]], pix_fmt: str = "yuv420p",
                 pts: list[int] | None = None, gop: int | None = None) -> Path:
    """A lossless clip of the given planes, at `pts` in 1/1000 s (default: 40 ms apart)."""
    pts = pts or [40 * i for i in range(len(pictures))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25, options={"g": str(gop)} if gop else {})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for planes, stamp in zip(pictures, pts, strict=True):
            frame = planes_to_frame(planes, pix_fmt)
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decoded(path: Path) -> list[tuple[int, list[np.ndarray]]]:
    with av.open(str(path)) as container:
        return [(f.pts, [p.copy() for p in frame_to_planes(f, alpha=True)]) for f in container.decode(video=0)]


def assert_same_frames(a: list[tuple[int, list[np.ndarray]]], b: list[tuple[int, list[np.ndarray]]]) -> None:
    assert [pts for pts, _ in a] == [pts for pts, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


HOLDS = [0, 0, 1, 1, 1, 2, 3, 3, 3, 3]  # drawings on ones, twos, threes and fours: 4 distinct of 10


@pytest.mark.parametrize("batch_size", [1, 3])
def test_exact_holds_are_upscaled_once_with_the_same_pictures_and_times(random_espcn, tmp_path, model_frames,
                                                                        batch_size):
    pts = [0, 40, 80, 100, 180, 200, 240, 330, 340, 400]  # VFR
    src = write_planes(tmp_path / "in.mkv", [picture(t, "yuv420p") for t in HOLDS], pts=pts)
    every = decoded(upscale_video(src, tmp_path / "every.mkv", model=random_espcn, batch_size=batch_size,
                                  encoder="ffv1", reuse_held=False))
    assert sum(model_frames) == len(HOLDS)
    model_frames.clear()
    reported = []
    held = decoded(upscale_video(src, tmp_path / "held.mkv", model=random_espcn, batch_size=batch_size,
                                 encoder="ffv1", progress=reported.append))
    assert sum(model_frames) == len(set(HOLDS))
    assert_same_frames(held, every)
    assert [t for t, _ in held] == pts
    assert reported[-1].frames == len(HOLDS) and reported[-1].reused == len(HOLDS) - len(set(HOLDS))


def changed(planes: list[np.ndarray], plane: int, delta: int) -> list[np.ndarray]:
    """`planes` with one sample of `plane` raised by `delta` codes."""
    out = [p.copy() for p in planes]
    out[plane][3, 5] += delta
    return out


def shifted(planes: list[np.ndarray]) -> list[np.ndarray]:
    """A 1-pixel pan to the left (chroma follows at its own sampling: half a pixel is its nearest)."""
    return [np.concatenate([p[:, 1:], p[:, -1:]], axis=1) for p in planes]


@pytest.mark.parametrize(("pix_fmt", "level"), [("yuv420p", 1), ("yuv420p10le", 4)])
def test_a_threshold_reuses_noise_but_never_motion(random_espcn, tmp_path, model_frames, pix_fmt, level):
    base = picture(0, pix_fmt)
    frames = {  # name: (planes, upscaled?)
        "first": (base, True),
        "one level": (changed(base, 0, level), False),
        "one level more, two from the first": (changed(changed(base, 0, level), 0, level), True),
        "the first again, within one level of the last upscaled": (changed(base, 0, level), False),
        "a 1-pixel pan": (shifted(changed(base, 0, level)), True),
        "a chroma sample two levels off": (changed(shifted(changed(base, 0, level)), 2, 2 * level), True),
        "a chroma sample back one level": (changed(shifted(changed(base, 0, level)), 2, level), False),
    }
    src = write_planes(tmp_path / "in.mkv", [planes for planes, _ in frames.values()], pix_fmt)
    out = decoded(upscale_video(src, tmp_path / "out.mkv", model=random_espcn, encoder="ffv1",
                                reuse_held=NOISE_LEVELS))
    every = decoded(upscale_video(src, tmp_path / "every.mkv", model=random_espcn, encoder="ffv1",
                                  reuse_held=False))
    upscaled = [up for _, up in frames.values()]
    assert model_frames == [1] * (sum(upscaled) + len(frames))
    assert [pts for pts, _ in out] == [pts for pts, _ in every]
    for i, up in enumerate(upscaled):  # an upscaled frame is the model's; a reused one is the frame before it
        expected = every[i][1] if up else out[i - 1][1]
        assert all(np.array_equal(p, q) for p, q in zip(out[i][1], expected, strict=True)), list(frames)[i]


def test_alpha_is_compared_too(random_espcn, tmp_path, model_frames):
    colour = picture(0, "yuv420p")
    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    pictures = [[*colour, alpha], [*colour, alpha], [*colour, np.where(np.arange(WIDTH) < 9, 0, alpha)]]
    src = write_planes(tmp_path / "in.mkv", pictures, "yuva420p")
    out = decoded(upscale_video(src, tmp_path / "out.mkv", model=random_espcn, encoder="ffv1"))
    assert model_frames == [1, 1] and len(out) == 3
    assert len(out[2][1]) == 4 and not np.array_equal(out[2][1][3], out[1][1][3])


def test_the_threshold_is_checked_in_one_line():
    assert reuse_threshold(True) == 0 and reuse_threshold(False) is None and reuse_threshold(2) == 2.0
    for bad in (-1, 256, float("nan"), "1"):
        with pytest.raises(InputError, match="reuse_held must be"):
            reuse_threshold(bad)


@pytest.mark.parametrize("row", [0, 63, 64, 150, 199])
def test_a_difference_anywhere_in_a_tall_plane_is_seen(row):
    """Planes are compared by blocks of rows: a sample in any of them counts."""
    a = np.full((200, 30), 100, np.uint8)
    for threshold, delta, same in ((0, 1, False), (1, 1, True), (1, 2, False)):
        b = a.copy()
        b[row, 7] += delta
        assert HeldFrames(threshold, 8).same([a, a[:100]], [b, a[:100]]) is same


def test_sixteen_bit_levels_and_float_samples():
    a = np.zeros((2, 2), np.uint16)
    assert HeldFrames(1, 16).same([a + 256], [a]) and not HeldFrames(1, 16).same([a + 257], [a])
    f = np.zeros((2, 2), np.float32)
    assert HeldFrames(2, None).same([f + 1.9 / 255], [f]) and not HeldFrames(2, None).same([f + 2.1 / 255], [f])


# --- chunks ---------------------------------------------------------------------------------------------------

def test_chunks_upscale_their_first_frame_and_reuse_the_holds_inside(random_espcn, tmp_path, model_frames):
    src = write_planes(tmp_path / "in.mkv", [picture(t, "yuv420p") for t in HOLDS], gop=1)
    starts = {c.start for c in plan_chunks(keyframe_times(src), Fraction(1, 1000), 0.12)}
    assert len(starts) > 2  # holds cross chunk boundaries
    every = decoded(upscale_video(src, tmp_path / "every.mkv", model=random_espcn, encoder="ffv1",
                                  chunk_seconds=0.12, reuse_held=False))
    model_frames.clear()
    reported = []
    held = decoded(upscale_video(src, tmp_path / "held.mkv", model=random_espcn, encoder="ffv1",
                                 chunk_seconds=0.12, progress=reported.append))
    upscaled = [i for i, t in enumerate(HOLDS) if i == 0 or t != HOLDS[i - 1] or 40 * i in starts]
    assert sum(model_frames) == len(upscaled) < len(HOLDS)
    assert_same_frames(held, every)
    assert (reported[-1].frames, reported[-1].reused) == (len(HOLDS), len(HOLDS) - len(upscaled))


# --- VapourSynth ----------------------------------------------------------------------------------------------

def vs_clip(pictures: list[list[np.ndarray]], fmt: int):
    """A VapourSynth clip of the given planes."""
    import vapoursynth as vs

    blank = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=fmt, length=len(pictures), keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p, data in enumerate(pictures[n]):
            np.copyto(np.asarray(out[p]), data)
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)


def vs_frames(clip, order: list[int]) -> dict[int, list[np.ndarray]]:
    return {n: [np.asarray(f[p]).copy() for p in range(f.format.num_planes)]
            for n in order for f in [clip.get_frame(n)]}


@pytest.mark.parametrize(("fmt", "pix_fmt", "batch_size"), [("YUV420P8", "yuv420p", 1),
                                                             ("YUV420P10", "yuv420p10le", 2)])
def test_vapoursynth_reuses_a_hold_requested_after_the_frame_before_it(random_espcn, model_frames, fmt, pix_fmt,
                                                                       batch_size):
    vs = pytest.importorskip("vapoursynth")
    import vsvidsr as sr

    clip = vs_clip([picture(t, pix_fmt) for t in HOLDS], getattr(vs, fmt))
    forward = list(range(len(HOLDS)))
    every = vs_frames(sr.upscale(clip, model=str(random_espcn), device="cpu", batch_size=batch_size,
                                 reuse_held=False), forward)
    model_frames.clear()
    held = vs_frames(sr.upscale(clip, model=str(random_espcn), device="cpu", batch_size=batch_size), forward)
    upscaled = [i for i, t in enumerate(HOLDS) if i == 0 or t != HOLDS[i - 1]]
    assert sum(model_frames) == len({i // batch_size for i in upscaled}) * batch_size  # a batch runs whole
    jumping = vs_frames(sr.upscale(clip, model=str(random_espcn), device="cpu", batch_size=batch_size),
                        [9, 3, 1, 4, 0, 8, 2, 5, 6, 7])
    for n in forward:
        assert all(np.array_equal(a, b) for a, b in zip(held[n], every[n], strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(jumping[n], every[n], strict=True))


# --- the command line -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "upscaled"), [((), 3), (("--reuse-held-frames",), 2),
                                                 (("--reuse-held-frames", "0"), 3), (("--no-reuse-held-frames",), 4)])
def test_cli_flags(capsys, random_espcn, tmp_path, model_frames, flags, upscaled):
    from vidsr.cli import main

    still = picture(0, "yuv420p")
    src = write_planes(tmp_path / "in.mkv", [still, still, changed(still, 0, 1), picture(1, "yuv420p")])
    assert main(["upscale", str(src), "-m", str(random_espcn), "-o", str(tmp_path / "out.mkv"), *flags]) == 0
    assert sum(model_frames) == upscaled
    bar = capsys.readouterr().err
    assert f"{4 - upscaled} held frames reused" in bar if upscaled < 4 else "reused" not in bar
