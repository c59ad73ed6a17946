"""Timestamps and frame accounting (issue #30): frames keep their order and times whatever the container's
stamps are worth, a valid file reports nothing missing, and every frame of a damaged one is either written or
reported lost, in one piece as in chunks."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidsr.cli import main
from vidsr.media.source import Source


@pytest.fixture
def upscale(capsys, caplog):
    """upscale(*args): `vidsr upscale` in-process; the exit code and what it told the user."""

    def run(*args: object) -> tuple[int, str]:
        caplog.clear()
        code = main(["upscale", *map(str, args), "--device", "cpu"])
        return code, capsys.readouterr().err + caplog.text

    return run


def grey_levels(count: int) -> list[av.VideoFrame]:
    """Frames of rising grey levels: their order can be read back from any decoded copy."""
    return [av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 + 5 * i, np.uint8), format="rgb24")
            for i in range(count)]


def h264_file(path: Path, stamps: list[int], time_base: Fraction, *, decode_order_pts: bool = False,
              options: dict[str, str] | None = None, keyframes: set[int] = frozenset()) -> Path:
    """H.264 with B-frames, frames at `stamps` (in `time_base`); `decode_order_pts` writes the packets'
    decode-order numbers as their pts and dts, as OpenCV's AVIs and some broken muxers carry them;
    `keyframes` forces those frames to be keyframes (a variable GOP)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(1 / (time_base * (stamps[1] - stamps[0]))))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.codec_context.options = {"bf": "2", "g": "12", **(options or {})}
        packets = []
        for i, (stamp, frame) in enumerate(zip(stamps, grey_levels(len(stamps)), strict=True)):
            frame.pts, frame.time_base = stamp, time_base
            frame.pict_type = av.video.frame.PictureType.I if i in keyframes else av.video.frame.PictureType.NONE
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for number, packet in enumerate(packets):
            if decode_order_pts:
                packet.pts = packet.dts = number
            out.mux(packet)
    return path


def decoded(path: Path, **options) -> tuple[list[int], list[float], dict]:
    """What `Source` gives: the frames' stamps, their grey levels and the losses it reports."""
    source = Source(path, **options)
    stamps, levels = [], []

    def keep(frame) -> None:
        stamps.append(frame.pts)
        levels.append(float(frame.planes[0].mean()))

    try:
        source.run(keep, lambda packet: None, set())
    finally:
        source.close()
    return stamps, levels, source.lost.spans


def notices(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.search(r"frame\(s\) (missing|dropped|skipped)", line)]


# --- 1: containers whose pts cannot be trusted -----------------------------------------------------------


def test_an_avi_stamped_in_decode_order_keeps_every_frame_in_order(upscale, random_espcn, tmp_path):
    """OpenCV writes H.264 with B-frames into AVI with pts = dts = decode order: the frames came out stamped
    1, 4, 3, 5, 2, ... and about half were dropped as going back."""
    src = h264_file(tmp_path / "cam.avi", list(range(30)), Fraction(1, 10), decode_order_pts=True)
    with av.open(str(src)) as container:
        own = [frame.pts for frame in container.decode(video=0)]
    assert own != sorted(own)  # the input really is stamped out of order
    stamps, levels, lost = decoded(src)
    assert len(stamps) == 30 and lost == {}
    assert stamps == sorted(stamps) and len(set(stamps)) == 30  # one frame per 0.1 s, in order
    assert levels == sorted(levels)  # the pictures in presentation order
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0 and not notices(err), err
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30


def test_decode_times_written_as_pts_by_another_muxer_keep_every_frame(tmp_path):
    """The same stamps in Matroska, whose pts are otherwise trusted: the frames are stamped by order from the
    first one whose pts goes back while the packets' never did."""
    src = h264_file(tmp_path / "broken.mkv", [i * 40 for i in range(30)], Fraction(1, 1000), decode_order_pts=True)
    stamps, levels, lost = decoded(src)
    assert len(stamps) == 30 and lost == {}
    assert stamps == sorted(set(stamps)) and levels == sorted(levels)


# --- 5: a valid file is never called damaged --------------------------------------------------------------


def ffv1_mkv(path: Path, stamps: list[int], time_base: Fraction) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = time_base
        for stamp, frame in zip(stamps, grey_levels(len(stamps)), strict=True):
            frame.pts, frame.time_base = stamp, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


VALID = {
    # 10 frames, uneven durations: a pause of half a second, and two of a second
    "vfr": lambda p: ffv1_mkv(p, [0, 33, 66, 100, 600, 633, 1633, 1666, 1700, 2700], Fraction(1, 1000)),
    # 3:2 pulldown durations (3, 2, 3, 2 fields of 1/60 s), and a stretch at 30 fps after it
    "telecined": lambda p: ffv1_mkv(p, [0, 3, 5, 8, 10, 13, 15, 18, 20, 22, 24, 26, 28, 30], Fraction(1, 60)),
    # keyframes 1, 2 and 20 frames apart, B-frames, a frame rate change halfway
    "variable-gop": lambda p: h264_file(p, [i * 40 for i in range(20)] + [800 + i * 20 for i in range(20)],
                                        Fraction(1, 1000), keyframes={0, 1, 3, 23, 24}),
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_valid_file_reports_nothing_missing(upscale, random_espcn, tmp_path, kind):
    src = VALID[kind](tmp_path / f"{kind}.mkv")
    with av.open(str(src)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    stamps, _, lost = decoded(src)
    assert len(stamps) == frames and lost == {}
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0 and not notices(err), err
