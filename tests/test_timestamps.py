"""Timestamps and frame accounting (issue #30): frames keep their order and times whatever the container's
stamps are worth, a valid file reports nothing missing, and every frame of a damaged one is either written or
reported lost, in one piece as in chunks."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidsr.cli import main
from vidsr.errors import VidsrError
from vidsr.media.chunks import keyframe_times, plan_chunks
from vidsr.media.info import probe
from vidsr.media.pipeline import upscale_video
from vidsr.media.source import Source
from vidsr.tools import sample


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


# --- 7: frames that share one timestamp -------------------------------------------------------------------


def test_frames_sharing_one_timestamp_are_kept_with_assume_fps(upscale, random_espcn, tmp_path):
    src = ffv1_mkv(tmp_path / "same.mkv", [0] * 5, Fraction(1, 1000))
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "one.mkv")
    assert code == 0, err
    assert "4 frame(s) dropped: their timestamps repeat or go back (--assume-fps RATE stamps frames in order)" in err
    code, err = upscale(src, "-m", random_espcn, "--assume-fps", "24000/1001", "-o", tmp_path / "all.mkv")
    assert code == 0 and not notices(err), err
    with av.open(str(tmp_path / "all.mkv")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert times == pytest.approx([i * 1001 / 24000 for i in range(5)], abs=1e-3)


@pytest.mark.parametrize("rate", ["0", "-24", "nan", "inf", "24/0", "fast", "5000"])
def test_assume_fps_takes_only_a_positive_finite_rate(capsys, random_espcn, tmp_path, rate):
    src = ffv1_mkv(tmp_path / "same.mkv", [0] * 2, Fraction(1, 1000))
    with pytest.raises(SystemExit) as exited:
        main(["upscale", str(src), "-m", str(random_espcn), "--assume-fps", rate, "-o", str(tmp_path / "out.mkv")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err and not (tmp_path / "out.mkv").exists()
    assert "argument --assume-fps: expected a frame rate above 0" in err
    with pytest.raises(VidsrError, match="assume_fps: expected a frame rate above 0"):
        upscale_video(src, tmp_path / "out.mkv", model=random_espcn, assume_fps=rate)


def test_the_vapoursynth_source_places_frames_by_order_where_stamps_cannot_say(tmp_path):
    vs = pytest.importorskip("vapoursynth")
    sr = pytest.importorskip("vsvidsr")
    same = ffv1_mkv(tmp_path / "same.mkv", [0] * 5, Fraction(1, 1000))
    clip = sr.source(same, assume_fps="24000/1001")
    assert (clip.num_frames, clip.fps) == (5, Fraction(24000, 1001))
    levels = {n: float(np.asarray(clip.get_frame(n)[0]).mean()) for n in (4, 0, 2, 1, 3)}  # random access
    assert [levels[n] for n in range(5)] == sorted(levels.values()) and len(set(levels.values())) == 5
    avi = h264_file(tmp_path / "cam.avi", list(range(20)), Fraction(1, 10), decode_order_pts=True)
    clip = sr.source(avi)
    levels = [float(np.asarray(clip.get_frame(n)[0]).mean()) for n in range(20)]
    assert clip.num_frames == 20 and levels == sorted(levels)
    with pytest.raises(vs.Error, match="assume_fps: expected a frame rate"):
        sr.source(same, assume_fps="0")


# --- 4: y4m carries the video's rate ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rate", "time_base", "chunked"), [
    ("ntsc.mp4", Fraction(30000, 1001), Fraction(1, 30000), False),
    ("pal.ts", Fraction(25), Fraction(1, 90000), False),
    ("pal.mp4", Fraction(25), Fraction(1, 12800), True),
], ids=["29.97-mp4", "25-ts", "25-mp4-chunked"])
def test_y4m_output_carries_the_videos_rate(upscale, random_espcn, tmp_path, name, rate, time_base, chunked):
    """y4m has no timestamps: its header's rate was the input's time base (F30000:1 for 29.97 fps). VapourSynth
    reads the NTSC one back (vspipe, through vsvidsr's source: seconds to start, so once)."""
    src = sample.write_clip(tmp_path / name, sample.ClipSpec(width=64, height=48, frames=12, rate=rate,
                                                             time_base=time_base))
    out = tmp_path / "out.y4m"
    code, err = upscale(src, "-m", random_espcn, "-o", out, *(["--chunk-seconds", "0.2"] if chunked else []))
    assert code == 0, err
    assert f" F{rate.numerator}:{rate.denominator} ".encode() in out.read_bytes()[:80]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == rate and sum(1 for _ in container.decode(stream)) == 12
        assert container.duration / 1e6 == pytest.approx(float(12 / rate), abs=1e-3)
    info = vspipe_info(out, tmp_path) if rate.denominator != 1 else None
    if info is not None:
        assert info["FPS"].startswith(f"{rate.numerator}/{rate.denominator} ") and info["Frames"] == "12"


def vspipe_info(path: Path, folder: Path) -> dict[str, str] | None:
    """`vspipe --info` of `sr.source(path)`; None where vspipe is not installed."""
    vspipe = Path(sys.executable).with_name("vspipe")
    if not vspipe.exists():
        return None
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "config")}
    subprocess.run([sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True)
    script = folder / "source.vpy"
    script.write_text("import vsvidsr as sr\nsr.source(path).set_output()\n")
    done = subprocess.run([str(vspipe), "--info", "-a", f"path={path}", str(script), "-"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


# --- 6: every frame written or reported lost, whole or in chunks ------------------------------------------


def moving_clip(path: Path, frames: int) -> Path:
    y, x = np.mgrid[0:48, 0:64] / 64
    moving = [np.stack([np.sin(6 * x + i / 4) * 0.4 + 0.5, np.cos(5 * y - i / 5) * 0.4 + 0.5, (x + y) / 2], -1)
              for i in range(frames)]
    spec = sample.ClipSpec(width=64, height=48, frames=frames, codec="libx264", options={"g": "8", "bf": "2"})
    return sample.write_clip(path, spec, frames=moving)


def damage(data: bytes, rng: random.Random) -> bytes:
    """One to three stretches of 1 to 300 bytes, anywhere, zeroed or made random."""
    bad = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at, size = rng.randrange(len(bad)), rng.choice([1, 4, 16, 64, 300])
        size = min(size, len(bad) - at)
        bad[at:at + size] = rng.randbytes(size) if rng.random() < 0.5 else bytes(size)
    return bytes(bad)


def video_packets(path: Path) -> tuple[list[int], int]:
    """The pts of the video packets the demuxer gives to be shown (an edit list can leave some out), and how
    many come before the first keyframe."""
    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size and not p.is_discard]
    before = next((i for i, (_, key) in enumerate(packets) if key), len(packets))
    return [pts for pts, _ in packets], before


def accounted(path: Path, **options) -> tuple[list[float], list[tuple[str, float, int]]]:
    """The times of the frames `Source` gives under --skip-errors, and its losses (reason, time, count)."""
    source = Source(path, skip_errors=True, **options)
    times: list[float] = []
    try:
        source.run(lambda frame: times.append(float(frame.pts * frame.time_base)), lambda packet: None, set())
    finally:
        source.close()
    return times, sorted((reason, round(start, 3), count) for reason, spans in source.lost.spans.items()
                         for start, _, count in spans)


def chunked(path: Path) -> tuple[list[float], list[tuple[str, float, int]]]:
    """The same, chunk by chunk (about 0.3 s each: a GOP), as a chunked job decodes it."""
    time_base = probe(path).video.time_base
    times, lost = [], []
    for chunk in plan_chunks(keyframe_times(path), time_base, 0.3):
        chunk_times, chunk_lost = accounted(path, pts_range=chunk.pts_range(), time_base=time_base)
        times += chunk_times
        lost += chunk_lost
    return times, sorted(lost)


def check_accounting(path: Path, frames: int, true_pts: list[int]) -> None:
    """Written + reported lost adds up to the frames the demuxer gives (every packet from the first keyframe
    on, the ones before it at most), stretches it skipped are not over-counted, and where the damage left the
    timestamps whole, the frames written and those lost are at exactly the input's times, and chunks say
    exactly what one piece says. A file of which
    no frame decodes is refused in one line, whole and in chunks (whose job then has nothing to join)."""
    try:
        times, lost = accounted(path)
    except VidsrError as exc:
        assert "no video frame could be decoded" in str(exc)
        assert not chunked(path)[0]
        return
    pts, before_key = video_packets(path)
    skipped = sum(count for reason, _, count in lost if "demuxer skipped" in reason)
    exact = len(times) + sum(count for reason, _, count in lost if "demuxer skipped" not in reason)
    assert len(pts) - before_key <= exact <= len(pts), (exact, len(pts), lost)
    assert skipped <= frames - (len(pts) - before_key), (skipped, lost)
    if None in pts or sorted(pts) != true_pts:  # damage shuffled the timestamps: chunks hold other frames
        return
    if all(count == 1 for *_, count in lost):
        with av.open(str(path)) as container:
            time_base = container.streams.video[0].time_base
        expected = sorted(float(p * time_base) for p in true_pts)
        assert sorted(times + [at for _, at, _ in lost]) == pytest.approx(expected, abs=2e-3), lost
    assert chunked(path) == (sorted(times), lost)  # chunks say what one piece says


def test_damage_anywhere_is_written_or_reported_lost(tmp_path):
    """A seeded fuzzer: MP4 and Matroska files of 24 and 40 frames, damaged anywhere, 12 ways each."""
    rng, checked = random.Random(30), 0
    for suffix, frames in [(".mp4", 24), (".mp4", 40), (".mkv", 24), (".mkv", 40)]:
        base = moving_clip(tmp_path / f"base{frames}{suffix}", frames)
        true_pts = sorted(video_packets(base)[0])
        for case in range(12):
            path = tmp_path / f"case{case}{suffix}"
            path.write_bytes(damage(base.read_bytes(), rng))
            try:
                probe(path)
            except VidsrError:  # the header itself is gone: refused in one line before any decoding
                continue
            check_accounting(path, frames, true_pts)
            checked += 1
    assert checked >= 30  # most damage leaves a file to decode
