"""Hardening from a user's-eye review (issue #17): real mistakes and damaged files give the expected result or
one clear line, nothing is lost silently, and the quick commands start without loading torch."""

from __future__ import annotations

import itertools
import re
import struct
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from PIL import Image

from vidsr.cli import main
from vidsr.errors import Cancelled, DecodeError, EncodeError, OutputError
from vidsr.media import sink as sink_module
from vidsr.media.pipeline import Progress, upscale_video
from vidsr.media.source import PtsRange, Source
from vidsr.models.zoo import bundled_weights, load_model, safetensors_metadata
from vidsr.tools import sample


def _modules_after(code: str) -> set[str]:
    """Which of torch / av / numpy a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in ('torch', 'av', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(eval(done.stdout.strip().splitlines()[-1]))


def test_help_and_models_do_not_load_torch_av_or_numpy():
    assert _modules_after("from vidsr.cli import build_parser; build_parser().format_help()") == set()
    assert _modules_after("from vidsr.cli import main; main(['models'])") == set()


def test_probe_loads_av_but_not_torch(make_clip):
    clip = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    assert _modules_after(f"from vidsr.cli import main; main(['probe', {str(clip)!r}])") == {"av"}


@pytest.mark.parametrize("name", sorted(bundled_weights()))
def test_bundled_weight_headers_hold_the_real_cost(name):
    descriptor = load_model(name)
    header = safetensors_metadata(bundled_weights()[name])
    assert header["params"] == descriptor.params
    assert header["gmacs_1080p"] == pytest.approx(descriptor.gmacs(), rel=1e-6)
    assert (header["arch"], header["scale"], header["color"]) == (descriptor.arch, descriptor.scale, descriptor.color)


# --- helpers for the media tests -----------------------------------------------------------------------------


@pytest.fixture
def upscale(capsys, caplog):
    """upscale(*args): run `vidsr upscale` in-process; returns the exit code and what it told the user (stderr
    and the notices it logged)."""

    def run(*args: object) -> tuple[int, str]:
        caplog.clear()
        code = main(["upscale", *map(str, args), "--device", "cpu"])
        return code, capsys.readouterr().err + caplog.text

    return run


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidsr: error: ") and "Traceback" not in err, err
    return lines[0]


def packet_times(path: Path, kind: str) -> list[int]:
    with av.open(str(path)) as container:
        return [p.dts for p in container.demux(**{kind: 0}) if p.size]


def opencv_style_avi(make_clip) -> Path:
    """An H.264 + AAC AVI whose audio timestamps repeat, as in AVIs written by OpenCV: its audio header
    declares a sample size, which makes FFmpeg's AVI demuxer count the AAC packets' bytes in huge samples."""
    path = make_clip("cam.avi", width=64, height=48, frames=8, audio=True, time_base=Fraction(1, 24))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"auds") + 44, 1 << 28)  # strh.dwSampleSize
    path.write_bytes(data)
    return path


# --- 1: broken audio timestamps ------------------------------------------------------------------------------


def test_avi_with_repeating_audio_timestamps_upscales_with_the_audio(upscale, make_clip, random_espcn, tmp_path):
    src = opencv_style_avi(make_clip)
    times = packet_times(src, "audio")
    assert any(b <= a for a, b in itertools.pairwise(times))  # the input really is broken
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4")
    assert code == 0, err
    assert "rebuilt from the sample count" in err
    out = packet_times(tmp_path / "out.mp4", "audio")
    assert len(out) == len(times) and all(b > a for a, b in itertools.pairwise(out))


def damage_audio_setup(path: Path) -> Path:
    """Break the AAC set-up data (the AudioSpecificConfig after the 18 bytes of WAVEFORMATEX in the audio
    stream's format chunk) of an AVI: FFmpeg's decoder then refuses to open, and the file still demuxes."""
    data = bytearray(path.read_bytes())
    wave_format = data.find(b"strf", data.find(b"auds")) + 8
    data[wave_format + 18:wave_format + 20] = b"\xff\xff"
    path.write_bytes(data)
    return path


def test_audio_that_does_not_decode_is_copied_while_its_timestamps_hold(upscale, make_clip, random_espcn, tmp_path):
    src = damage_audio_setup(make_clip("cam.avi", width=64, height=48, frames=8, audio=True))
    times = packet_times(src, "audio")
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0, err
    assert len(packet_times(tmp_path / "out.mkv", "audio")) == len(times)


def test_a_header_the_output_format_refuses_is_one_line_not_a_damaged_packet(upscale, make_clip, random_espcn,
                                                                            tmp_path):
    """MPEG-TS parses AAC's set-up data for its ADTS headers and refuses damaged set-up data when the header is
    written. That happened at the first packet's mux: reported as a damaged packet, and under --skip-errors
    the next packet crashed PyAV (a segmentation fault)."""
    src = damage_audio_setup(make_clip("cam.avi", width=64, height=48, frames=8, audio=True))
    out = tmp_path / "out.ts"
    for extra in ([], ["--skip-errors"]):
        run = subprocess.run([sys.executable, "-m", "vidsr", "upscale", str(src), "-m", random_espcn, "-q",
                              "-o", str(out), "--device", "cpu", *extra], capture_output=True, text=True)
        assert run.returncode == 1, run.stderr
        line = one_line_error(run.stderr)
        assert "writing the output's header failed" in line and "(stream 1: audio aac)" in line
        assert "--audio drop" in line and not out.exists()
    assert upscale(src, "-m", random_espcn, "--audio", "drop", "-o", out)[0] == 0


def test_audio_whose_timestamps_need_rebuilding_and_that_does_not_decode(upscale, make_clip, random_espcn,
                                                                         tmp_path):
    """Rebuilding timestamps decodes the audio: a stream whose set-up data is damaged failed to open there,
    which left its codec context without a codec, and the next packet ended the run in a traceback."""
    src = damage_audio_setup(opencv_style_avi(make_clip))
    out = tmp_path / "out.mp4"
    code, err = upscale(src, "-m", random_espcn, "-q", "-o", out)
    line = one_line_error(err)
    assert code == 1 and not out.exists()
    assert "stream 1 (audio aac) has timestamps that repeat or go back, and does not decode" in line
    assert "--audio drop" in line and "--skip-errors" in line
    code, err = upscale(src, "-m", random_espcn, "-o", out)  # the bar stays where it stopped, 0 of 8 frames
    assert code == 1 and "0/8" in err.splitlines()[-2] and "0frame" not in err
    code, err = upscale(src, "-m", random_espcn, "--skip-errors", "-o", out)
    assert code == 0, err
    assert re.search(r"\d+ packet\(s\) left out: stream 1 \(audio aac\) has timestamps that repeat", err), err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8


@pytest.mark.parametrize(("mode", "codecs"), [("drop", []), ("reencode", ["mp3"])])
def test_audio_option_drops_or_reencodes(upscale, make_clip, random_espcn, tmp_path, mode, codecs):
    src = make_clip("in.mkv", width=64, height=48, frames=4, audio=True)
    code, err = upscale(src, "-m", random_espcn, "--audio", mode, "-o", tmp_path / "out.avi")
    assert code == 0, err
    with av.open(str(tmp_path / "out.avi")) as container:
        assert [s.codec_context.codec.canonical_name for s in container.streams.audio] == codecs


# --- 2 and 4: frames lost to damage are dropped cleanly and always reported -------------------------------


def ffv1_mkv(path: Path, times: list[int], rate: int = 24) -> Path:
    """An FFV1 Matroska clip with these frame timestamps (in 1/rate s); Matroska stores repeated ones."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=rate)
        stream.codec_context.width, stream.codec_context.height, stream.codec_context.pix_fmt = 64, 48, "yuv420p"
        pictures = sample.testsrc_frames(sample.ClipSpec(width=64, height=48, frames=len(times)))
        for pts, frame in zip(times, pictures, strict=True):
            frame.pts, frame.time_base = pts, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def clusters(data: bytes) -> list[int]:
    """Offsets of the Matroska Cluster elements (ID 1F 43 B6 75)."""
    found, at = [], -1
    while (at := data.find(b"\x1f\x43\xb6\x75", at + 1)) >= 0:
        found.append(at)
    return found


def test_repeating_video_timestamps_are_dropped_and_reported(upscale, random_espcn, tmp_path):
    src = ffv1_mkv(tmp_path / "rep.mkv", [0, 1, 2, 3, 3, 4, 5, 5])
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4")  # MP4 refuses repeated timestamps
    assert code == 0, err
    assert ("2 frame(s) dropped: their timestamps repeat or go back (--assume-fps RATE stamps frames in order), "
            "at 0.12-0.21 s") in err
    assert len(packet_times(tmp_path / "out.mp4", "video")) == 6


def test_a_stretch_the_demuxer_skips_is_reported_with_count_and_times(upscale, random_espcn, tmp_path):
    src = ffv1_mkv(tmp_path / "in.mkv", list(range(48)))
    data = bytearray(src.read_bytes())
    found = clusters(data)
    cluster = found[len(found) // 2]
    data[cluster:cluster + 12] = bytes(12)  # the demuxer resynchronises at the next cluster, without an error
    src.write_bytes(data)
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0, err
    missing = re.search(r"in\.mkv: (\d+) frame\(s\) missing: the demuxer skipped damaged data there.*, at (\d\.\d\d)-",
                        err)
    assert missing, err
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48 - int(missing[1])


def test_a_healthy_avi_whose_nominal_rate_is_wrong_reports_nothing_missing(upscale, make_clip, random_espcn,
                                                                           tmp_path):
    src = make_clip("in.avi", width=64, height=48, frames=12)  # B-frames in AVI: FFmpeg guesses 240 fps for 24
    with av.open(str(src)) as container:
        assert container.streams.video[0].guessed_rate != 24  # what the check must not trust
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0, err
    assert "missing" not in err


def test_a_capture_cut_mid_gop_reports_nothing_missing(upscale, random_espcn, tmp_path):
    """MPEG-TS cut at a byte offset (a DVB or IPTV capture) starts mid-GOP: the frames before its first keyframe
    never decode, and that is how such files are, not damage."""
    src = tmp_path / "in.ts"
    y, x = np.mgrid[0:48, 0:64] / 64
    moving = [np.stack([np.sin(6 * x + i / 4) * 0.4 + 0.5, np.cos(5 * y - i / 5) * 0.4 + 0.5, (x + y) / 2], -1)
              for i in range(48)]
    spec = sample.ClipSpec(width=64, height=48, frames=48, codec="libx264", options={"g": "12", "bf": "2"})
    data = sample.write_clip(src, spec, frames=moving).read_bytes()
    src.write_bytes(data[len(data) // 3 // 188 * 188:])  # whole TS packets from a third in
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0, err
    assert "missing" not in err and "skipped" not in err


def test_skipped_undecodable_frames_are_counted_with_their_times(upscale, random_espcn, tmp_path):
    src = ffv1_mkv(tmp_path / "in.mkv", list(range(24)))
    data = bytearray(src.read_bytes())
    start = clusters(data)[1] + 400
    data[start:start + 300] = bytes(300)  # inside a frame: its checksum fails
    src.write_bytes(data)
    code, err = upscale(src, "-m", random_espcn, "--skip-errors", "-o", tmp_path / "out.mkv")
    assert code == 0, err
    assert re.search(r"in\.mkv: \d+ undecodable frame\(s\) skipped, at \d\.\d\d", err), err


def h264_mp4_damaged(path: Path, packets: range, keep_lengths: bool) -> Path:
    """An H.264 MP4 (GOPs of 8 frames, 24 frames at 24 fps) whose video packets `packets` are zeroed (after each
    packet's first NAL length when `keep_lengths`): the index still lists them, the decoder refuses them."""
    y, x = np.mgrid[0:48, 0:64] / 64
    moving = [np.stack([np.sin(6 * x + i / 4) * 0.4 + 0.5, np.cos(5 * y - i / 5) * 0.4 + 0.5, (x + y) / 2], -1)
              for i in range(24)]  # testsrc's frames would come marked as keyframes
    spec = sample.ClipSpec(width=64, height=48, frames=24, codec="libx264", options={"g": "8", "bf": "0"})
    sample.write_clip(path, spec, frames=moving)
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for i, p in enumerate(container.demux(video=0)) if i in packets]
    data = bytearray(path.read_bytes())
    skip = 4 if keep_lengths else 0
    for pos, size in spans:
        data[pos + skip:pos + size] = bytes(size - skip)
    path.write_bytes(data)
    return path


def lost_frames(err: str, name: str) -> int:
    """How many frames the notices say were lost, over all reasons (each notice counted once: `upscale` gives
    stderr and the log)."""
    notices = set(re.findall(rf"{re.escape(name)}: (\d+) ((?:undecodable )?frame\(s\)[^\n]*)", err))
    return sum(int(count) for count, _ in notices)


def test_a_damaged_first_keyframe_is_probed_past_and_its_gop_dropped(upscale, random_espcn, tmp_path, capsys):
    src = h264_mp4_damaged(tmp_path / "in.mp4", range(1), keep_lengths=True)
    assert main(["probe", str(src)]) == 0  # the facts come from the first frame that decodes
    assert "h264 64x48" in capsys.readouterr().out
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4")
    assert code != 0 and "decode error at frame 0" in err and "--skip-errors" in err
    code, err = upscale(src, "-m", random_espcn, "--skip-errors", "-o", tmp_path / "out.mp4")
    assert code == 0, err
    assert "in.mp4: 1 undecodable frame(s) skipped, at 0.00 s" in err
    # the rest of the GOP has no reference: dropped (by the decoder or as orphans) and counted, once
    assert lost_frames(err, "in.mp4") == 8, err
    assert len(packet_times(tmp_path / "out.mp4", "video")) == 16


def test_a_lost_first_gop_is_reported_once(upscale, random_espcn, tmp_path):
    src = h264_mp4_damaged(tmp_path / "in.mp4", range(8), keep_lengths=False)
    code, err = upscale(src, "-m", random_espcn, "--skip-errors", "-o", tmp_path / "out.mp4")
    assert code == 0, err
    assert "in.mp4: 8 undecodable frame(s) skipped, at 0.00-0.29 s" in err
    assert lost_frames(err, "in.mp4") == 8, err  # the gap they leave is the same 8 frames, not counted twice
    assert len(packet_times(tmp_path / "out.mp4", "video")) == 16


def test_frames_decoded_after_a_lost_keyframe_are_dropped_until_the_next_keyframe_decodes(make_clip):
    source = Source(make_clip("in.mkv", width=64, height=48, frames=2), skip_errors=True)

    def frames(*orders: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pts=o, dts=o, key_frame=False, pict_type=PictureType.P) for o in orders]

    def kept(given: list[SimpleNamespace]) -> list[SimpleNamespace]:
        marked = source._with_orphans(given)
        assert all(why in (None, "frame(s) skipped: the keyframe they depend on does not decode") for _, why in marked)
        return [frame for frame, why in marked if why is None]

    before = frames(7, 8)
    assert kept(before) == before  # no keyframe lost: nothing to drop
    source._orphans_from = 10  # the keyframe decoded 10th did not decode
    assert kept(frames(8, 10, 12)) == frames(8)  # decoded before it: kept (reordering)
    source._orphans_until = 14  # the next keyframe decoded
    assert kept(frames(13, 14, 15)) == frames(14, 15)
    assert source._orphans_from is None
    # a second lost keyframe; a frame without decode order (no dts or pts) ends the span if it is intra
    source._orphans_from, source._orphans_until = 20, None
    intra = SimpleNamespace(pts=None, dts=None, key_frame=False, pict_type=PictureType.I)
    assert kept([*frames(21), intra]) == [intra]
    source.close()


def fails_in_one_line_unless_skipping(upscale, src: Path, model: Path, out: Path, error: str) -> str:
    """Upscale `src` twice: without --skip-errors it must fail with exactly `error` and leave no output; with
    it, succeed. Returns what the second run told the user."""
    code, err = upscale(src, "-m", model, "-o", out)
    assert code != 0 and not out.exists() and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [error]
    code, err = upscale(src, "-m", model, "--skip-errors", "-o", out)
    assert code == 0, err
    return err


def test_undecodable_audio_being_reencoded_fails_in_one_line_or_leaves_a_reported_gap(upscale, make_clip,
                                                                                         random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=24, audio=True)
    with av.open(str(src)) as container:
        broken = [p for p in container.demux(audio=0) if p.size][10]
        pos, size, at = broken.pos, broken.size, float(broken.pts * broken.time_base)
    data = bytearray(src.read_bytes())
    data[pos:pos + size] = bytes(size)
    src.write_bytes(data)
    out = tmp_path / "out.webm"  # WebM takes no AAC: the audio is decoded and re-encoded to Opus
    err = fails_in_one_line_unless_skipping(
        upscale, src, random_espcn, out,
        f"vidsr: error: in.mp4: audio stream 1 does not decode at {at:.2f} s (invalid data found when processing "
        "input); use --skip-errors to leave a silent gap there, or --audio drop")
    assert f"in.mp4: 1 undecodable audio packet(s) of stream 1 skipped (silent there), at {at:.2f} s" in err
    assert stream_codecs(out) == [("video", "vp9"), ("audio", "opus")]


def test_damaged_decoder_set_up_data_fails_in_one_line_or_is_decoded_leniently(upscale, random_espcn, tmp_path):
    """A damaged SEI in an MP4's hvcC: the strict decoder does not open, and each packet after the first then
    raised PyAV's "cannot decode unknown codec" (a traceback, at times a segmentation fault)."""
    src = sample.write_clip(tmp_path / "in.mp4", sample.ClipSpec(width=64, height=48, frames=24, codec="libx265"))
    data = bytearray(src.read_bytes())
    sei = data.find(b"\x4e\x01\x05", data.find(b"hvcC"))  # x265's settings: a prefix SEI in the header
    data[sei + 3] = 0  # its payload size
    src.write_bytes(data)
    out = tmp_path / "out.mp4"
    err = fails_in_one_line_unless_skipping(
        upscale, src, random_espcn, out,
        f"vidsr: error: {src}: the video stream's set-up data is damaged (invalid data found when processing "
        "input); use --skip-errors to decode it anyway")
    assert "in.mp4: the video stream's set-up data is damaged" in err and "without strict checks" in err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.demux(video=0) if _.size) == 24


def test_audio_to_re_encode_whose_set_up_data_is_damaged_fails_in_one_line_or_is_left_out(upscale, make_clip,
                                                                                           random_espcn, tmp_path):
    """An AAC stream whose AudioSpecificConfig (in the MP4's esds) is damaged does not open; re-encoded (WebM
    takes no AAC), each of its packets then raised "cannot decode unknown codec" under --skip-errors."""
    src = make_clip("in.mp4", width=64, height=48, frames=24, audio=True)
    with av.open(str(src)) as container:
        config = container.streams.audio[0].codec_context.extradata
    data = bytearray(src.read_bytes())
    data[data.find(config, data.find(b"esds")) + 1] = 0  # sampling frequency index and channels: none valid
    src.write_bytes(data)
    out = tmp_path / "out.webm"
    err = fails_in_one_line_unless_skipping(
        upscale, src, random_espcn, out,
        "vidsr: error: in.mp4: stream 1 (audio aac) does not decode (operation not permitted); use --audio drop, "
        "or --skip-errors to leave it out")
    assert "in.mp4: stream 1 (audio aac) does not decode (operation not permitted); left out" in err
    assert stream_codecs(out) == [("video", "vp9")]


def mkv_with_leap(path: Path, leap_ms: int, frames: range) -> Path:
    """48 frames of H.264 at 42 ms in Matroska, those in `frames` stamped `leap_ms` later, as a damaged
    fragment's timestamps come out."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        packets = []
        for i in range(48):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            picture.pts, picture.time_base = i * 42, Fraction(1, 1000)
            packets += stream.encode(picture)
        for packet in packets + stream.encode(None):
            if packet.pts // 42 in frames:
                packet.pts += leap_ms
            out.mux(packet)
    return path


def output_pts(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(round(p.pts * p.time_base * 1000) for p in container.demux(stream) if p.size)


def test_a_frame_whose_timestamp_leaps_out_of_sequence_is_dropped_alone(upscale, random_espcn, tmp_path):
    """One frame stamped 10 minutes late: taken, it made the 27 frames after it "go back" (dropped), a chunked
    job of the 10 minutes, and a failed output ("invalid argument")."""
    src = mkv_with_leap(tmp_path / "in.mkv", 600_000, range(20, 21))
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4", "--chunk-seconds", "0")
    assert code == 0, err
    assert "in.mkv: 1 frame(s) dropped: their timestamps leap far out of sequence, at 0.80 s" in err
    assert output_pts(tmp_path / "out.mp4") == [i * 42 for i in range(48) if i != 20]


def test_a_real_leap_in_the_timestamps_is_kept(upscale, random_espcn, tmp_path):
    src = mkv_with_leap(tmp_path / "in.mkv", 10_000, range(20, 48))  # a 10 s pause in a recording
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv", "--chunk-seconds", "0")
    assert code == 0, err
    assert "dropped" not in err
    assert output_pts(tmp_path / "out.mkv") == [i * 42 + (10_000 if i >= 20 else 0) for i in range(48)]


def test_a_leap_longer_than_mp4_holds_fails_in_one_line(upscale, random_espcn, tmp_path):
    """MP4 stores a frame's duration in 32 bits of its timescale (here 1/16000 s: 37 hours): a 40-hour leap
    failed at the end as "writing the output failed (not yet implemented in ffmpeg, patches welcome)"."""
    src = mkv_with_leap(tmp_path / "in.mkv", 40 * 3600 * 1000, range(47, 48))
    out = tmp_path / "out.mp4"
    code, err = upscale(src, "-m", random_espcn, "-o", out, "--chunk-seconds", "0")
    assert code == 1 and not out.exists()
    assert [line for line in err.splitlines() if "error" in line] == [
        "vidsr: error: the video's timestamps leap 40.0 h after 1.93 s, longer than one frame can last in MP4; "
        "write .mkv"]
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv", "--chunk-seconds", "0")
    assert code == 0, err
    assert output_pts(tmp_path / "out.mkv")[-1] == 47 * 42 + 40 * 3600 * 1000


def float_audio_mov(path: Path, garbage: float, frame: int) -> Path:
    """A MOV with 24 frames of H.264 and 1 s of float PCM whose audio frame `frame` (of 1024 samples) holds
    ten samples of `garbage`, as damaged audio decodes."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_f32le", rate=48000)
        audio.layout = "mono"
        for i in range(24):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, 24)
            out.mux(video.encode(picture))
        for i in range(47):
            samples = (np.sin(np.arange(1024, dtype=np.float32) / 10) * 0.3)[None]
            if i == frame:
                samples[0, 100:110] = garbage
            sound = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            sound.sample_rate, sound.pts = 48000, i * 1024
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize("garbage", [np.nan, np.inf, 1e20])
def test_float_audio_garbage_is_silenced_with_a_notice_where_it_is_re_encoded(upscale, random_espcn, tmp_path,
                                                                              garbage):
    """FFmpeg's AAC encoder refuses NaN, infinite or absurd samples (EINVAL, which ended the run with a traceback
    or "invalid argument"): they are made silent, and said so with the time."""
    src = float_audio_mov(tmp_path / "in.mov", garbage, frame=40)
    code, err = upscale(src, "-m", random_espcn, "--audio", "reencode", "-o", tmp_path / "out.mp4")
    assert code == 0, err
    at = 40 * 1024 / 48000
    assert (f"in.mov: 1 audio frame(s) of stream 1 with samples that are not finite or far beyond full scale "
            f"(made silent there), at {at:.2f} s") in err
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        sound = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert sound.shape[1] >= 47 * 1024 and np.isfinite(sound).all() and np.abs(sound).max() < 0.5


def test_an_encoder_refusing_a_frame_fails_in_one_line(tmp_path):
    with av.open(str(tmp_path / "out.mp4"), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        with pytest.raises(EncodeError) as caught:
            for pts in (48000, 49024):  # the encoder looks one frame ahead: the second call fails
                sound = av.AudioFrame.from_ndarray(np.full((1, 1024), np.inf, np.float32), format="fltp",
                                                   layout="mono")
                sound.sample_rate, sound.pts, sound.time_base = 48000, pts, Fraction(1, 48000)
                sink_module.Sink._encode(stream, sound)
    assert str(caught.value) == "the aac encoder of output stream 0 failed at 1.02 s (invalid argument)"


def test_rebuilt_audio_timestamps_survive_a_packet_that_does_not_decode():
    """Rebuilding timestamps from the sample count decodes packets that carry no duration (codecs without a
    fixed frame size): a damaged one takes its predecessor's duration instead of ending the run."""
    decoded = iter([[SimpleNamespace(samples=480, sample_rate=48000)],
                    av.error.InvalidDataError(1094995529, "Invalid data")])

    def decode(packet):
        result = next(decoded)
        if isinstance(result, Exception):
            raise result
        return result

    ctx = SimpleNamespace(is_open=True, codec=SimpleNamespace(canonical_name="vorbis"), frame_size=0,
                          sample_rate=48000, decode=decode)
    clock = sink_module._AudioClock(SimpleNamespace(index=1, codec_context=ctx))
    tb = Fraction(1, 48000)
    packets = [SimpleNamespace(pts=0, dts=0, duration=0, time_base=tb) for _ in range(3)]  # OpenCV-style
    for packet in packets:
        clock.fix(packet)
    assert [p.dts for p in packets] == [0, 480, 960]


def test_a_damaged_audio_packet_copied_from_mpeg_ts_fails_in_one_line_or_is_dropped(upscale, make_clip,
                                                                                       random_espcn, tmp_path):
    """ADTS AAC from MPEG-TS goes through the muxer's aac_adtstoasc filter into Matroska, which refuses a packet
    whose ADTS header is damaged: that failed the run as "writing the output failed", even with --skip-errors."""
    src = make_clip("in.ts", width=64, height=48, frames=24, audio=True)
    with av.open(str(src)) as container:
        broken = [p for p in container.demux(audio=0) if p.size][10]
        pos, at = broken.pos, float(broken.pts * broken.time_base)
    data = bytearray(src.read_bytes())
    header = data.find(b"\xff\xf1", pos)  # the packet's ADTS syncword: keep it, break the fields after it
    data[header + 2:header + 7] = b"\xff" * 5
    src.write_bytes(data)
    out = tmp_path / "out.mkv"
    err = fails_in_one_line_unless_skipping(
        upscale, src, random_espcn, out,
        f"vidsr: error: in.ts: stream 1 (audio aac) has a damaged packet at {at:.2f} s (invalid data found when "
        "processing input); use --skip-errors to drop it, or --audio drop")
    assert re.search(rf"in\.ts: \d+ damaged packet\(s\) of stream 1 \(audio aac\) dropped, at {at:.2f} s", err), err
    assert stream_codecs(out) == [("video", "h264"), ("audio", "aac")]


def test_frames_lost_before_the_first_one_out_are_reported(tmp_path):
    """A chunk whose start does not decode: the frames before the first one out are missing, and said so."""
    src = ffv1_mkv(tmp_path / "in.mkv", list(range(48)))
    data = bytearray(src.read_bytes())
    first = clusters(data)[0]
    data[first:first + 12] = bytes(12)  # the demuxer resumes at the second cluster
    src.write_bytes(data)
    source = Source(src, pts_range=PtsRange(0, None))
    out: list[int] = []
    source.run(lambda frame: out.append(frame.pts), lambda packet: None, set())
    ((reason, spans),) = source.lost.spans.items()
    first_out = round(out[0] * source.video.time_base * 24)
    assert "frame(s) missing: the demuxer skipped damaged data there" in reason
    assert spans == [(0.0, pytest.approx((first_out - 1) / 24, abs=1e-3), first_out)]
    assert len(out) == 48 - first_out


# --- 3: every output container gets codecs its muxer takes -------------------------------------------------


def stream_codecs(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.codec.canonical_name) for s in container.streams]


@pytest.mark.parametrize(("suffix", "codecs", "notices"), [
    (".ogv", [("video", "vp8"), ("audio", "flac")], ["re-encoding to flac", "subtitle subrip): the ogv container"]),
    (".mpg", [("video", "h264"), ("audio", "mp2")], ["re-encoding to mp2", "subtitle subrip): the mpeg container"]),
    (".vob", [("video", "h264"), ("audio", "mp2")], ["re-encoding to mp2", "subtitle subrip): the svcd container"]),
    (".y4m", [("video", "rawvideo")], ["holds no audio; dropped", "subtitle subrip): the yuv4mpegpipe container"]),
    (".ivf", [("video", "vp8")], ["holds no audio; dropped", "subtitle subrip): the ivf container"]),
    (".m2ts", [("video", "h264"), ("audio", "aac")], ["subtitle subrip): the mpegts container"]),
])
def test_outputs_get_codecs_their_container_holds(upscale, make_clip, random_espcn, tmp_path, suffix, codecs, notices):
    src = make_clip("in.mkv", width=64, height=48, frames=3, audio=True, subtitles=True)
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / f"out{suffix}")
    assert code == 0, err
    assert stream_codecs(tmp_path / f"out{suffix}") == codecs
    assert all(notice in err for notice in notices), err


def test_default_output_of_an_ogv_is_an_ogv(upscale, make_clip, random_espcn):
    src = make_clip("clip.ogv", width=64, height=48, frames=3, codec="libvpx", options=())
    code, err = upscale(src, "-m", random_espcn)
    assert code == 0, err
    assert stream_codecs(src.with_name("clip_x2.ogv")) == [("video", "vp8")]


# --- 5: nothing is lowered or ignored silently -------------------------------------------------------------


@pytest.mark.parametrize(("pix_fmt", "output", "notice"), [
    ("yuv420p12le", "out.mp4", "libx264 takes no yuv420p12le: 12-bit samples become 10-bit"),
    ("yuva420p", "out.mov", "libx264 takes no yuva420p: the alpha channel is dropped"),
    ("yuv444p", "out.ogv", "libvpx takes no yuv444p: chroma is subsampled (4:4:4 -> 4:2:0)"),
])
def test_lowered_depth_alpha_and_chroma_are_announced(upscale, make_clip, random_espcn, tmp_path, pix_fmt, output,
                                                      notice):
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", pix_fmt=pix_fmt, options=())
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / output)
    assert code == 0, err
    assert notice in err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--crf", "99"], "--crf 99 is outside libx264's range (0-51"),
    (["-c", "libsvtav1", "--crf", "0"], "--crf 0 is outside libsvtav1's range (1-63"),
    (["--encoder-option", "nosuchopt=1"], "libx264 has no option nosuchopt"),
    (["-c", "ffv1", "--preset", "slow"], "ffv1 has no option preset"),
])
def test_out_of_range_crf_and_unknown_encoder_options_are_errors(upscale, make_clip, random_espcn, tmp_path, args,
                                                                 fragment):
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    code, err = upscale(src, "-m", random_espcn, *args, "-o", tmp_path / "out.mkv")
    assert code == 1 and fragment in one_line_error(err)
    assert not list(tmp_path.glob("*out*"))


# --- 6: two runs to one output -----------------------------------------------------------------------------


def test_an_output_another_run_is_writing_is_refused(upscale, make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    (tmp_path / ".out.partial-1.mkv").write_bytes(b"")  # process 1 (init) is always alive
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 1 and "another vidsr run (process 1) is writing it" in one_line_error(err)
    assert not (tmp_path / "out.mkv").exists()
    code, err = upscale(src, "-m", random_espcn, "--overwrite", "-o", tmp_path / "out.mkv")
    assert code == 0, err


def test_an_output_that_appears_during_the_run_is_not_replaced(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=3, codec="ffv1", options=())
    target = tmp_path / "out.mkv"

    def other_run_finishes(progress: Progress) -> None:
        target.write_bytes(b"the other run's result")

    with pytest.raises(OutputError, match="appeared while this run worked"):
        upscale_video(src, target, model=random_espcn, device="cpu", progress=other_run_finishes)
    assert target.read_bytes() == b"the other run's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]  # no partial file left


# --- 9: cleanup never hides the first error ----------------------------------------------------------------


def test_read_only_filesystem_gives_the_write_error_alone(make_clip, random_espcn, tmp_path):
    """A read-only tmpfs, mounted in a private mount namespace (skipped where unshare is not allowed)."""
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    readonly = tmp_path / "ro"
    readonly.mkdir()
    mount = f"mount -t tmpfs -o ro none {readonly}"
    command = f"{mount} && exec {sys.executable} -m vidsr upscale {src} -m {random_espcn} --device cpu -q " \
              f"-o {readonly / 'out.mkv'}"
    if subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("unshare cannot mount a private tmpfs here (user and mount namespaces)")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1
    assert "read-only file system" in one_line_error(done.stderr)


# --- 7, 8: tags players rely on ----------------------------------------------------------------------------


def test_hevc_in_mp4_and_mov_is_tagged_hvc1(upscale, make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    for name in ("out.mp4", "out.mov"):
        code, err = upscale(src, "-m", random_espcn, "-c", "libx265", "-o", tmp_path / name)
        assert code == 0, err
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].codec_context.codec_tag == "hvc1"


def test_undefined_encoder_dts_is_mended_before_muxing():
    """libx265 leaves a two-frame clip's dts uninitialised now and then; MP4 refused those packets."""
    from vidsr.media.sink import _EncoderDts

    def packets(*stamps: tuple[int, int | None]) -> list[av.Packet]:
        made = []
        for pts, dts in stamps:
            packet = av.Packet(b"\0")
            packet.pts, packet.dts = pts, dts
            made.append(packet)
        return made

    mend = _EncoderDts(Fraction(1, 1000))
    fixed = mend.fix(packets((0, -2248849979199232), (40, -140553123699912)))
    fixed += mend.fix(packets((120, 39), (80, 60), (160, 2**40)))
    assert [(p.pts, p.dts) for p in fixed] == [(0, 0), (40, 1), (120, 39), (80, 60), (160, 61)]
    reordered = _EncoderDts(Fraction(1, 1000)).fix(packets((80, -80), (160, -40), (40, 0), (120, 40)))
    assert [p.dts for p in reordered] == [-80, -40, 0, 40]  # a B-frame encoder's own dts are left alone


def sar_mp4(path: Path, sar: Fraction | None) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = 64, 48, "yuv420p"
        if sar is not None:
            ctx.sample_aspect_ratio = sar
        for frame in sample.testsrc_frames(sample.ClipSpec(width=64, height=48, frames=2)):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("sar", [Fraction(1), Fraction(4, 3), None])
def test_a_stated_sar_is_kept_in_mp4_even_1_to_1(upscale, random_espcn, tmp_path, sar):
    src = sar_mp4(tmp_path / "in.mp4", sar)
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.video[0].sample_aspect_ratio == (sar or 0)


# --- 10, 12: errors that say what is wrong -----------------------------------------------------------------


QSV_MISSING = "(the Intel oneVPL / Media SDK runtime is missing|this machine has no GPU render device)"


@pytest.mark.parametrize(("encoder", "missing"), [("h264_nvenc", "the NVIDIA driver's encoder is missing"),
                                                  ("h264_amf", "the AMD AMF runtime is missing"),
                                                  ("h264_qsv", QSV_MISSING), ("av1_qsv", QSV_MISSING)])
def test_a_hardware_encoder_without_its_driver_says_so(upscale, make_clip, random_espcn, tmp_path, encoder, missing):
    if encoder not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {encoder}")
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    code, err = upscale(src, "-m", random_espcn, "-c", encoder, "-o", tmp_path / "out.mp4")
    if code == 0:
        pytest.skip(f"{encoder} works on this machine")
    assert re.search(f"{encoder} cannot start: {missing}", one_line_error(err))


def test_a_vaapi_or_qsv_encoder_without_a_usable_render_node_says_so(monkeypatch):
    """Their libraries may load on a machine without a GPU: the missing device is then what to name."""
    monkeypatch.setattr(sink_module, "_loads", lambda library: True)
    monkeypatch.setattr(sink_module.sys, "platform", "linux")
    monkeypatch.setattr(sink_module.glob, "glob", lambda pattern: [])
    for encoder in ("hevc_vaapi", "h264_qsv"):
        assert sink_module._missing_driver(encoder) == "this machine has no GPU render device (/dev/dri/renderD*)"
    assert sink_module._missing_driver("h264_nvenc") is None
    assert sink_module._missing_driver("libx264") is None
    monkeypatch.setattr(sink_module.glob, "glob", lambda pattern: ["/dev/dri/renderD128"])
    monkeypatch.setattr(sink_module.os, "access", lambda path, mode: False)
    assert "may not open the GPU render device (/dev/dri/renderD128)" in sink_module._missing_driver("h264_vaapi")
    monkeypatch.setattr(sink_module.os, "access", lambda path, mode: True)
    assert sink_module._missing_driver("h264_vaapi") is None


def test_a_damaged_index_is_called_a_damaged_file(make_clip, capsys):
    src = make_clip("in.mp4", width=64, height=48, frames=2)
    data = bytearray(src.read_bytes())
    config = data.find(b"avcC")
    data[config + 4:config + 34] = bytes(30)  # the decoder configuration inside the moov index
    src.write_bytes(data)
    assert main(["probe", str(src)]) == 1
    assert "in.mp4: damaged file" in one_line_error(capsys.readouterr().err)


# --- 21: what the CLI prints -------------------------------------------------------------------------------


def test_probe_names_codecs_not_decoders(upscale, make_clip, random_espcn, tmp_path, capsys):
    src = make_clip("in.mkv", width=64, height=48, frames=2, audio=True)
    assert upscale(src, "-m", random_espcn, "--audio", "reencode", "-o", tmp_path / "mp3.avi")[0] == 0
    assert main(["probe", str(tmp_path / "mp3.avi")]) == 0
    out = capsys.readouterr().out
    assert "audio #1: mp3" in out and "mp3float" not in out


def test_a_single_image_draws_no_frame_bar(capsys, random_espcn, tmp_path):
    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "-m", str(random_espcn), "--device", "cpu"]) == 0
    assert "frame" not in capsys.readouterr().err


def test_a_folder_run_names_the_files_it_skips(upscale, make_clip, random_espcn, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip("clips/a.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    (folder / "notes.txt").write_text("not a video")
    (folder / "cover.xyz").write_bytes(b"?")
    code, err = upscale(folder, "-m", random_espcn)
    assert code == 0, err
    assert "skipped 2 file(s) that are not video or images by their suffix: cover.xyz, notes.txt" in err


# --- pictures and folders, a second review --------------------------------------------------------------------


def test_a_png_with_an_icc_profile_is_probed_and_upscaled(upscale, random_espcn, tmp_path):
    """Reading the side data of such a frame crashed the process (PyAV 19 frees the profile's name twice)."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "icc.png", icc_profile=profile)
    probed = subprocess.run([sys.executable, "-m", "vidsr", "probe", str(tmp_path / "icc.png")],
                            capture_output=True, text=True, timeout=120)
    assert probed.returncode == 0 and "png 32x24" in probed.stdout, probed.stderr
    code, err = upscale(tmp_path / "icc.png", "-m", random_espcn)
    assert code == 0, err
    assert Image.open(tmp_path / "icc_x2.png").size == (64, 48)


@pytest.mark.parametrize(("source", "target"), [("in.jpg", "out.png"), ("in.png", "out.jpg"), ("in.png", "out.png")])
def test_a_pictures_icc_profile_is_carried_into_png_and_jpeg(upscale, random_espcn, tmp_path, source, target):
    """A photo's profile (Display P3 from a phone) was dropped: its colours were then shown as sRGB."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("RGB", (32, 24), (200, 60, 90)).save(tmp_path / source, icc_profile=profile)
    code, err = upscale(tmp_path / source, "-m", random_espcn, "-o", tmp_path / target)
    assert code == 0 and "ICC" not in err, err
    with Image.open(tmp_path / target) as out:
        out.load()  # every chunk's CRC is checked
        assert out.info.get("icc_profile") == profile and out.size == (64, 48)
    code, err = upscale(tmp_path / source, "-m", random_espcn, "-o", tmp_path / "out.webp")
    assert code == 0 and f"{source}: its ICC colour profile is not carried into the output" in err


def _animation(path: Path, frames: int = 3) -> Path:
    pictures = [Image.new("RGB", (32, 24), (70 * i, 100, 200 - 60 * i)) for i in range(frames)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return path


@pytest.mark.parametrize("name", ["anim.webp", "anim.png"])
def test_an_animated_picture_becomes_a_video_with_every_frame(upscale, random_espcn, tmp_path, name):
    code, err = upscale(_animation(tmp_path / name), "-m", random_espcn)
    assert code == 0, err
    with av.open(str(tmp_path / "anim_x2.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3


@pytest.mark.parametrize(("source", "target"), [("anim.webp", "out.webp"), ("clip.mp4", "out.png")])
def test_several_frames_into_one_picture_is_one_clear_error(upscale, make_clip, random_espcn, tmp_path, source,
                                                           target):
    """image2 overwrote the picture with every frame: the last frame won, exit 0."""
    src = _animation(tmp_path / source) if source.endswith(".webp") else make_clip(source, width=32, height=24,
                                                                                  frames=4)
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / target)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"vidsr: error: {source} has more than one frame")
    assert not (tmp_path / target).exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_keep_their_colours_at_hd_sizes(upscale, tmp_path, suffix):
    """Their decoders read YUV as BT.601 (WebP: limited range) whatever the tags say; the engine picked BT.709
    from 720 lines up and kept a PNG's full range, which shifted hue and stretched contrast."""
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 200, 30), (128, 128, 128), (20, 20, 20)]
    bars = np.repeat(np.array(colours, np.uint8), 120, axis=0)[:, None].repeat(16, axis=1)  # 16 x 720
    Image.fromarray(bars).save(tmp_path / "bars.png")
    code, err = upscale(tmp_path / "bars.png", "-m", "espcn-x2", "-o", tmp_path / f"out{suffix}")
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / f"out{suffix}").convert("RGB")).astype(int)
    middles = out[120::240, 16]  # the middle row of each bar, scaled x2
    assert np.abs(middles - np.array(colours)).max() <= 4, middles


@pytest.mark.parametrize(("orientation", "upright"), [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                                      (3, Image.Transpose.ROTATE_180)])
def test_a_photos_exif_orientation_turns_the_picture(upscale, tmp_path, orientation, upright):
    """Picture writers keep no display rotation: the output showed a phone photo on its side."""
    stored = np.full((32, 48, 3), 200, np.uint8)
    stored[:8, :8], stored[-8:, :8] = (255, 0, 0), (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    code, err = upscale(tmp_path / "photo.jpg", "-m", "espcn-x2", "-o", tmp_path / "out.png")
    assert code == 0, err
    seen = Image.fromarray(stored).transpose(upright)
    out = Image.open(tmp_path / "out.png")
    assert out.size == (2 * seen.width, 2 * seen.height)
    difference = np.abs(np.asarray(out.resize(seen.size, Image.Resampling.BOX)).astype(int) - np.asarray(seen))
    assert difference.mean() < 8


def test_grey_with_alpha_keeps_its_alpha(upscale, random_espcn, tmp_path):
    grey = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1))
    alpha = np.tile(np.linspace(255, 30, 32).astype(np.uint8)[:, None], (1, 48))
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(tmp_path / "la.png")
    code, err = upscale(tmp_path / "la.png", "-m", random_espcn)
    assert code == 0, err
    out = Image.open(tmp_path / "la_x2.png")
    assert out.mode == "LA"
    expected = np.asarray(Image.fromarray(alpha).resize(out.size, Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(np.asarray(out)[..., 1] - expected).mean() < 1


@pytest.mark.parametrize(("name", "mode", "magic"), [("out.ppm", "RGB", b"P6"), ("out.pgm", "L", b"P5"),
                                                     ("out.tga", "RGB", None)])
def test_netpbm_and_targa_outputs_are_what_their_suffix_says(upscale, random_espcn, tmp_path, name, mode, magic):
    """They were JPEG files: image2 falls back to its default codec for suffixes vidsr had no encoder for."""
    Image.new(mode, (32, 24), 120).save(tmp_path / f"in{Path(name).suffix}")
    code, err = upscale(tmp_path / f"in{Path(name).suffix}", "-m", random_espcn, "-o", tmp_path / name)
    assert code == 0, err
    out = Image.open(tmp_path / name)
    assert (out.format, out.mode, out.size) == ({".tga": "TGA"}.get(Path(name).suffix, "PPM"), mode, (64, 48))
    assert magic is None or (tmp_path / name).read_bytes().startswith(magic)


def test_a_picture_suffix_without_an_encoder_is_refused(upscale, random_espcn, tmp_path):
    Image.new("RGB", (32, 24), (10, 200, 30)).save(tmp_path / "in.png")
    code, err = upscale(tmp_path / "in.png", "-m", random_espcn, "-o", tmp_path / "out.pcx")
    assert code == 1 and "vidsr writes no '.pcx' pictures" in one_line_error(err)
    assert list(tmp_path.iterdir()) == [tmp_path / "in.png"]


def test_a_folder_run_gives_clashing_outputs_their_own_names(upscale, make_clip, random_espcn, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    make_clip("media/a.mp4", width=32, height=24, frames=2)
    _animation(folder / "a.webp")
    (folder / "drafts").mkdir()
    code, err = upscale(folder, "-m", random_espcn)
    assert code == 0, err
    assert "a.webp: written as a_webp.mp4, since a.mp4 is another file's output" in err
    assert "skipped 1 subfolder(s); a folder run does not go into them: drafts" in err
    frames = {}
    for name in ("a.mp4", "a_webp.mp4"):
        with av.open(str(tmp_path / "media_x2" / name)) as container:
            frames[name] = sum(1 for _ in container.decode(video=0))
    assert frames == {"a.mp4": 2, "a_webp.mp4": 3}


def test_a_folder_run_into_a_file_is_one_clear_error(upscale, make_clip, random_espcn, tmp_path):
    (tmp_path / "media").mkdir()
    make_clip("media/a.mp4", width=32, height=24, frames=2)
    (tmp_path / "taken.png").write_bytes(b"")
    code, err = upscale(tmp_path / "media", "-m", random_espcn, "-o", tmp_path / "taken.png")
    assert code == 1 and "taken.png: is a file" in one_line_error(err)


def test_a_cmyk_jpeg_gives_rgb_without_a_false_alpha_notice(upscale, tmp_path):
    """FFmpeg decodes CMYK JPEG to RGB + an opaque alpha: the output was RGBA, or 'alpha dropped' was said."""
    Image.new("CMYK", (32, 24), (10, 200, 30, 0)).save(tmp_path / "cmyk.jpg")
    for target in ("out.png", "out.jpg"):
        code, err = upscale(tmp_path / "cmyk.jpg", "-m", "espcn-x2", "-o", tmp_path / target)
        assert code == 0 and "alpha" not in err, err
    out = Image.open(tmp_path / "out.png")
    expected = Image.open(tmp_path / "cmyk.jpg").convert("RGB").getpixel((5, 5))
    assert out.mode == "RGB" and np.abs(np.subtract(out.getpixel((10, 10)), expected)).max() <= 3


def test_a_large_icc_profile_is_split_over_jpeg_segments(tmp_path):
    from vidsr.media.icc import embed_profile

    Image.new("RGB", (16, 8), (10, 20, 30)).save(tmp_path / "out.jpg")
    profile = bytes(range(256)) * 600  # 153,600 bytes: three APP2 segments
    assert embed_profile(tmp_path / "out.jpg", profile)
    with Image.open(tmp_path / "out.jpg") as out:
        out.load()
        assert out.info["icc_profile"] == profile and out.getpixel((3, 3)) == pytest.approx((10, 20, 30), abs=2)


def test_an_upscaler_given_is_used_and_conflicting_settings_are_refused(tmp_path):
    import vidsr

    Image.new("RGB", (20, 16), (10, 20, 30)).save(tmp_path / "in.png")
    upscaler = vidsr.Upscaler("espcn-x2", device="cpu")
    assert vidsr.upscale_path(tmp_path / "in.png", tmp_path / "a.png", upscaler=upscaler) == [tmp_path / "a.png"]
    with pytest.raises(vidsr.VidsrError, match="leave out model, tile"):
        vidsr.upscale_video(tmp_path / "in.png", tmp_path / "b.png", upscaler=upscaler, model="espcn-x4", tile=64)
    assert not (tmp_path / "b.png").exists()


def loss_notices(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name}: ") and "frame(s)" in
            r.getMessage()]


@pytest.mark.parametrize("chunk_seconds", [0, 0.3], ids=["whole", "chunked"])
def test_a_lost_middle_gop_is_said_once_whole_or_in_chunks(random_espcn, tmp_path, caplog, chunk_seconds):
    """In 0.3 s chunks the middle GOP is a chunk of its own that decodes to nothing: the job goes on, and the
    loss is said once, as a single run says it (not by each chunk, nor again as a gap by its neighbours)."""
    src = h264_mp4_damaged(tmp_path / "in.mp4", range(8, 16), keep_lengths=False)
    out = upscale_video(src, tmp_path / "out.mp4", model=random_espcn, skip_errors=True, chunk_seconds=chunk_seconds)
    assert loss_notices(caplog, "in.mp4") == ["in.mp4: 8 undecodable frame(s) skipped, at 0.33-0.62 s"]
    assert len(packet_times(out, "video")) == 16


def test_a_resumed_chunked_job_still_says_what_its_earlier_chunks_lost(random_espcn, tmp_path, caplog):
    src = h264_mp4_damaged(tmp_path / "in.mp4", range(8), keep_lengths=False)
    out = tmp_path / "out.mp4"
    cancel = threading.Event()
    with pytest.raises(Cancelled):  # stopped in the last chunk: the first, all lost, is done
        upscale_video(src, out, model=random_espcn, skip_errors=True, chunk_seconds=0.3, batch_size=1, cancel=cancel,
                      progress=lambda p: cancel.set() if p.frames >= 9 else None)
    assert loss_notices(caplog, "in.mp4") == []  # said by the job at its end, not by a chunk
    caplog.clear()
    upscale_video(src, out, model=random_espcn, skip_errors=True, chunk_seconds=0.3)
    assert loss_notices(caplog, "in.mp4") == ["in.mp4: 8 undecodable frame(s) skipped, at 0.00-0.29 s"]
    assert len(packet_times(out, "video")) == 16


def test_a_decode_error_in_a_chunk_says_when(random_espcn, tmp_path):
    """A chunk's frames are not numbered from the video's start: the error gives the time instead."""
    src = h264_mp4_damaged(tmp_path / "in.mp4", range(8, 9), keep_lengths=True)
    with pytest.raises(DecodeError, match=r"in\.mp4: decode error at 0\.33 s \(.*\); use --skip-errors"):
        upscale_video(src, tmp_path / "out.mp4", model=random_espcn, chunk_seconds=0.3)
    with pytest.raises(DecodeError, match=r"in\.mp4: decode error at frame 8 \(.*\); use --skip-errors"):
        upscale_video(src, tmp_path / "out.mp4", model=random_espcn, chunk_seconds=0)
