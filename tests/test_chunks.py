"""Chunked, resumable jobs: the joined output equals a single run; a rerun continues from finished chunks."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import vidsr
from vidsr.compute.upscaler import Upscaler
from vidsr.errors import Cancelled, OutputError
from vidsr.media.chunks import keyframe_times, plan_chunks
from vidsr.media.info import probe
from vidsr.media.workfolder import input_fingerprint, work_folder_of
from vidsr.tools.sample import ClipSpec, pattern_frame, write_clip

FONT = b"\x00\x01\x00\x00 not really a font"
ROOT = Path(__file__).resolve().parents[1]


def with_chapter_and_font(src: Path, dst: Path) -> Path:
    """Remux `src` into `dst` with a chapter and an attachment."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        out.set_chapters([{"id": 1, "start": 0, "end": 1500, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "Intro"}}])
        out.add_attachment(name="font.ttf", mimetype="font/ttf", data=FONT)
        out.metadata["title"] = "chunk test"
        for packet in inp.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def frames_of(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.pts * f.time_base, np.concatenate([p.ravel() for p in _planes(f)])) for f in c.decode(video=0)]


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(bytes(p), np.uint8) for p in frame.planes]


def stream_packets(path: Path, kind: str) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [(p.pts, bytes(p)) for p in c.demux(streams) if p.size]


def container_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {
            "streams": [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams
                        if s.type != "attachment"],
            "attachments": [(s.name, bytes(s.data)) for s in c.streams if s.type == "attachment"],
            "chapters": [(ch["start"] * ch["time_base"], ch["end"] * ch["time_base"], ch["metadata"].get("title"))
                         for ch in c.chapters()],
            "title": c.metadata.get("title"),
            "video": (v.codec_context.pix_fmt, v.codec_context.width, v.codec_context.height,
                      int(v.codec_context.colorspace), int(v.codec_context.color_primaries),
                      int(v.codec_context.color_trc), v.sample_aspect_ratio),
        }


@pytest.fixture
def vfr_mkv(make_clip, tmp_path: Path) -> Path:
    """5 s of VFR 10-bit FFV1 (a keyframe every 3 frames) with AAC, SRT, a chapter and an attachment."""
    clip = make_clip("plain.mkv", width=64, height=48, frames=30, rate=Fraction(6), vfr=True, audio=True,
                     subtitles=True, codec="ffv1", pix_fmt="yuv420p10le", options=(("g", "3"),))
    return with_chapter_and_font(clip, tmp_path / "in.mkv")


def test_chunked_ffv1_equals_single_run_bit_for_bit(vfr_mkv, random_espcn, tmp_path, caplog):
    single = vidsr.upscale_video(vfr_mkv, tmp_path / "single.mkv", model=random_espcn, encoder="ffv1")
    chunked = vidsr.upscale_video(vfr_mkv, tmp_path / "chunked.mkv", model=random_espcn, encoder="ffv1",
                                  chunk_seconds=1)
    assert len(plan_chunks(keyframe_times(vfr_mkv), probe(vfr_mkv).video.time_base, 1)) >= 4
    single_frames, chunked_frames = frames_of(single), frames_of(chunked)
    assert len(chunked_frames) == 30
    assert [t for t, _ in chunked_frames] == [t for t, _ in single_frames]  # every VFR pts
    for (_, a), (_, b) in zip(single_frames, chunked_frames, strict=True):
        np.testing.assert_array_equal(a, b)
    assert container_facts(chunked) == container_facts(single)
    assert container_facts(chunked)["chapters"] == [(0, Fraction(3, 2), "Intro")]
    assert container_facts(chunked)["video"][0] == "yuv420p10le"
    for kind in ("audio", "subtitle"):
        assert stream_packets(chunked, kind) == stream_packets(single, kind) == stream_packets(vfr_mkv, kind)
    assert not work_folder_of(chunked).exists()  # removed after success


def h264_clip(path: Path, options: tuple[tuple[str, str], ...]) -> Path:
    """4 s at 8 fps with AAC; a keyframe each second and B-frames (`options` adds to them)."""
    spec = ClipSpec(width=64, height=48, frames=32, rate=Fraction(8), audio=True,
                    options=(("crf", "20"), ("g", "8"), ("keyint_min", "8"), ("sc_threshold", "0"), ("bf", "3"),
                             *options))
    # Fresh frames: testsrc2's come marked as I-frames, which x264 would obey
    return write_clip(path, spec, frames=[pattern_frame(64, 48, t) for t in range(spec.frames)])


@pytest.mark.parametrize("options", [(), (("x264-params", "open-gop=1"),)], ids=["b-frames", "open-gop"])
def test_chunked_h264_keeps_every_frame_and_timestamp(random_espcn, tmp_path, options):
    src = h264_clip(tmp_path / "in.mp4", options)
    assert len(keyframe_times(src)) == 4
    single = vidsr.upscale_video(src, tmp_path / "single.mp4", model=random_espcn)
    chunked = vidsr.upscale_video(src, tmp_path / "chunked.mp4", model=random_espcn, chunk_seconds=1)
    single_frames, chunked_frames = frames_of(single), frames_of(chunked)
    assert [t for t, _ in chunked_frames] == [t for t, _ in single_frames]
    assert len(chunked_frames) == 32
    for (_, a), (_, b) in zip(single_frames, chunked_frames, strict=True):  # same pictures, each encoded apart
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2
    assert stream_packets(chunked, "audio") == stream_packets(src, "audio")
    with av.open(str(chunked)) as c:  # B-frames survive the copy: decode order differs from display order
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts)


def test_one_keyframe_is_one_chunk(random_espcn, tmp_path):
    src = h264_clip(tmp_path / "in.mp4", (("g", "1000"),))
    assert len(keyframe_times(src)) == 1
    out = vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn, chunk_seconds=1)
    assert len(frames_of(out)) == 32


class CountingUpscaler(Upscaler):
    """Counts the frames the model is run on."""

    frames = 0

    def run_model(self, x):
        CountingUpscaler.frames += x.shape[0]
        return super().run_model(x)


SLOW_RUN = """
import sys, time
import vidsr
vidsr.upscale_video(sys.argv[1], sys.argv[2], model=sys.argv[3], encoder="ffv1", chunk_seconds=1, batch_size=2,
                    progress=lambda p: time.sleep(0.25))
"""


def manifest_done(folder: Path) -> int:
    try:
        return sum(c["state"] == "done" for c in json.loads((folder / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_then_resume_recomputes_only_unfinished_chunks(vfr_mkv, random_espcn, tmp_path):
    out = tmp_path / "out.mkv"
    work = work_folder_of(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(vfr_mkv), str(out), str(random_espcn)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while manifest_done(work) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    manifest = json.loads((work / "manifest.json").read_text())
    done = [c for c in manifest["chunks"] if c["state"] == "done"]
    assert 2 <= len(done) < len(manifest["chunks"]), "the kill came too late to test resuming"
    assert not out.exists()

    CountingUpscaler.frames = 0
    vidsr.upscale_video(vfr_mkv, out, encoder="ffv1", chunk_seconds=1,
                        upscaler=CountingUpscaler(random_espcn, device="cpu"))
    assert CountingUpscaler.frames == 30 - sum(c["frames"] for c in done)
    unbroken = vidsr.upscale_video(vfr_mkv, tmp_path / "unbroken.mkv", model=random_espcn, encoder="ffv1")
    assert [t for t, _ in frames_of(out)] == [t for t, _ in frames_of(unbroken)]
    for (_, a), (_, b) in zip(frames_of(out), frames_of(unbroken), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not work.exists()


def interrupted_job(src: Path, out: Path, model: Path, chunks_done: int) -> Path:
    """Leave a work folder with `chunks_done` finished chunks, as a run cancelled after them would."""
    import threading

    cancel = threading.Event()

    def progress(p) -> None:
        if manifest_done(work_folder_of(out)) >= chunks_done:
            cancel.set()

    with pytest.raises(vidsr.errors.Cancelled):
        vidsr.upscale_video(src, out, model=model, encoder="ffv1", chunk_seconds=1, progress=progress, cancel=cancel,
                            batch_size=1)
    return work_folder_of(out)


def test_damaged_chunk_is_redone(vfr_mkv, random_espcn, tmp_path, caplog):
    out = tmp_path / "out.mkv"
    work = interrupted_job(vfr_mkv, out, random_espcn, 2)
    chunk = work / "chunk-00000.nut"
    chunk.write_bytes(chunk.read_bytes()[:-10] + b"0123456789")
    CountingUpscaler.frames = 0
    vidsr.upscale_video(vfr_mkv, out, encoder="ffv1", chunk_seconds=1,
                        upscaler=CountingUpscaler(random_espcn, device="cpu"))
    assert "chunk 0 is missing or damaged; redoing it" in caplog.text
    assert 0 < CountingUpscaler.frames < 30
    assert len(frames_of(out)) == 30


def test_a_resumed_runs_rate_counts_only_its_own_frames(vfr_mkv, random_espcn, tmp_path, capsys):
    out = tmp_path / "out.mkv"
    work = interrupted_job(vfr_mkv, out, random_espcn, 2)
    done = sum(c["frames"] for c in json.loads((work / "manifest.json").read_text())["chunks"] if c["state"] == "done")
    reports = []
    vidsr.upscale_video(vfr_mkv, tmp_path / "callback.mkv", model=random_espcn, encoder="ffv1", chunk_seconds=1,
                        progress=reports.append)  # another output: a fresh job, nothing resumed
    assert reports and all(p.resumed == 0 for p in reports)
    shutil.copytree(work, work_folder_of(tmp_path / "bar.mkv"), ignore=shutil.ignore_patterns("lock"))
    reports.clear()
    vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=1, progress=reports.append)
    assert reports and all(p.resumed == done for p in reports)
    assert all(p.fps == pytest.approx((p.frames - done) / p.elapsed) for p in reports)
    capsys.readouterr()
    vidsr.upscale_video(vfr_mkv, tmp_path / "bar.mkv", model=random_espcn, encoder="ffv1", chunk_seconds=1,
                        progress=True)
    first = capsys.readouterr().err.split("\r")[1]
    assert f"| {done}/" in first and "?frame/s" in first  # the bar starts at them, without a rate


@pytest.mark.parametrize("change", ["settings", "input", "no-resume"])
def test_other_settings_input_or_no_resume_start_afresh(vfr_mkv, random_espcn, tmp_path, caplog, change):
    out = tmp_path / "out.mkv"
    interrupted_job(vfr_mkv, out, random_espcn, 1)
    src, options = vfr_mkv, {"encoder": "ffv1"}
    if change == "settings":
        options = {"encoder": "libx264", "crf": 30}
    elif change == "input":  # another file at the same path: a work folder from another input
        src = with_chapter_and_font(vfr_mkv, tmp_path / "other.mkv")
        os.replace(src, vfr_mkv)
    CountingUpscaler.frames = 0
    vidsr.upscale_video(vfr_mkv, out, chunk_seconds=1, upscaler=CountingUpscaler(random_espcn, device="cpu"),
                        resume=change != "no-resume", **options)
    assert CountingUpscaler.frames == 30  # nothing reused
    expected = "--no-resume: starting afresh" if change == "no-resume" else "from another input or other settings"
    assert expected in caplog.text


def test_read_only_folder_is_one_clear_error(vfr_mkv, random_espcn, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root writes anywhere, but not into /proc
            folder = Path("/proc/self")
        with pytest.raises(OutputError, match="cannot create the work folder"):
            vidsr.upscale_video(vfr_mkv, folder / "out.mkv", model=random_espcn, chunk_seconds=1)
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("chunk_seconds", [1, 0], ids=["chunked", "whole"])
def test_second_process_on_the_same_output_is_refused(vfr_mkv, random_espcn, tmp_path, chunk_seconds):
    out = tmp_path / "out.mkv"
    work = interrupted_job(vfr_mkv, out, random_espcn, 1)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True)\ntime.sleep(60)", str(work / "lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match="another vidsr process is writing it"):
            vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=chunk_seconds)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not out.exists() and manifest_done(work) == 1


def test_a_run_in_one_piece_removes_an_earlier_chunked_runs_leftovers(vfr_mkv, random_espcn, tmp_path, caplog):
    out = tmp_path / "out.mkv"
    work = interrupted_job(vfr_mkv, out, random_espcn, 2)
    vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=0)
    assert len(frames_of(out)) == 30
    assert not work.exists() and "removed .out.mkv.vidsr, the finished chunks of an earlier chunked run" in caplog.text


def test_the_input_fingerprint_sees_a_change_in_the_middle(tmp_path):
    """Size and both ends stay the same when a tool patches a long file in place: its time of change does not."""
    path = tmp_path / "in.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    before = input_fingerprint(path)
    with path.open("r+b") as f:
        f.seek(3 << 19)
        f.write(b"patched")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, max(stat.st_mtime_ns, before["mtime_ns"] + 1_000_000)))  # a later edit
    after = input_fingerprint(path)
    assert after["size"] == before["size"] and after["ends_sha256"] == before["ends_sha256"]
    assert after != before


def test_elementary_stream_without_timestamps_runs_whole_with_a_notice(random_espcn, tmp_path, caplog):
    src = tmp_path / "raw.h264"
    with av.open(str(src), "w", format="h264") as c:
        stream = c.add_stream("libx264", rate=8, options={"g": "2"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray((pattern_frame(64, 48, i) * 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    out = vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn, chunk_seconds=0.5)
    assert "no timestamps (an elementary stream); upscaled in one piece" in caplog.text
    assert len(frames_of(out)) == 12
    assert not work_folder_of(out).exists()


def test_cli_chunk_seconds_and_no_resume(vfr_mkv, random_espcn, tmp_path):
    out = tmp_path / "out.mkv"
    interrupted_job(vfr_mkv, out, random_espcn, 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "vidsr", "upscale", str(vfr_mkv), "-o", str(out), "-m",
                             str(random_espcn), "-c", "ffv1", "--chunk-seconds", "1", "--no-resume"],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "vidsr: out.mkv: --no-resume: starting afresh" in result.stderr
    assert len(frames_of(out)) == 30 and not work_folder_of(out).exists()


def test_a_file_cut_short_warns_when_chunked_too(make_clip, random_espcn, tmp_path, caplog):
    whole = make_clip("whole.mkv", width=64, height=48, frames=96)  # 4 s declared in the header
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # an interrupted download
    out = vidsr.upscale_video(cut, tmp_path / "cut_x2.mkv", model=random_espcn, chunk_seconds=0.5)
    assert 0 < len(frames_of(out)) < 96
    assert "cut.mkv: the video stops" in caplog.text and "it may be truncated" in caplog.text


def test_a_foreign_manifest_is_replaced_with_a_notice(vfr_mkv, random_espcn, tmp_path, caplog):
    out = tmp_path / "out.mkv"
    work = work_folder_of(out)
    work.mkdir()
    (work / "manifest.json").write_text('{"something": "else"}')
    (work / "chunk-00000.nut").write_bytes(b"not ours")
    vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=1)
    assert "unreadable or foreign manifest" in caplog.text
    assert len(frames_of(out)) == 30 and not work.exists()


@pytest.mark.parametrize("damage", ["chunks-a-string", "index-a-string"])
def test_a_manifest_with_wrong_types_is_foreign(vfr_mkv, random_espcn, tmp_path, caplog, damage):
    out = tmp_path / "out.mkv"
    work = interrupted_job(vfr_mkv, out, random_espcn, 2)
    manifest = json.loads((work / "manifest.json").read_text())
    if damage == "chunks-a-string":
        manifest["chunks"] = "all of them"
    else:
        manifest["chunks"][0]["index"] = "0"
    (work / "manifest.json").write_text(json.dumps(manifest))
    vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=1)
    assert "unreadable or foreign manifest" in caplog.text
    assert len(frames_of(out)) == 30 and not work.exists()


_OTHER_VALUES = ["x", "", -1, 2.5, float("nan"), 10**30, None, True, [], [1, "a"], {}, {"state": "done"}]


def _mutate(rng: random.Random, text: str) -> str:
    """`text` (a manifest) with one value replaced by one of another type, a key removed, or its bytes cut
    or garbled. Values keep their types' meaning otherwise: a frame count edited to another count is trusted."""
    kind = rng.choice(["replace", "replace", "remove", "cut", "garble"])
    if kind == "cut":
        return text[: rng.randrange(len(text))]
    if kind == "garble":
        at = rng.randrange(len(text))
        return text[:at] + "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 8))) + text[at:]
    data = json.loads(text)
    node, key = data, None
    while isinstance(node, dict | list) and node and (key is None or rng.random() < 0.7):
        parent = node
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node = node[key]
    if kind == "remove" and isinstance(parent, dict):
        del parent[key]
    else:
        parent[key] = rng.choice([v for v in _OTHER_VALUES if type(v) is not type(node)])
    return json.dumps(data)


def test_fuzzed_manifests_resume_or_start_afresh(vfr_mkv, random_espcn, tmp_path, capsys):
    """Seeded and bounded: every damaged manifest gives the whole output, exit 0, no traceback, no work folder."""
    from vidsr.cli import main

    base = interrupted_job(vfr_mkv, tmp_path / "base.mkv", random_espcn, 3)
    text = (base / "manifest.json").read_text()
    rng = random.Random(30)
    for case in range(12):
        out = tmp_path / f"out{case}.mkv"
        shutil.copytree(base, work_folder_of(out), ignore=shutil.ignore_patterns("lock"))
        (work_folder_of(out) / "manifest.json").write_text(_mutate(rng, text))
        code = main(["upscale", str(vfr_mkv), "-o", str(out), "-m", str(random_espcn), "-c", "ffv1",
                     "--chunk-seconds", "1", "-q"])
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, (case, err)
        assert len(frames_of(out)) == 30 and not work_folder_of(out).exists(), case


def test_an_existing_output_is_replaced_only_with_overwrite(vfr_mkv, random_espcn, tmp_path):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"an earlier result")
    with pytest.raises(OutputError, match="already exists"):
        vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=1)
    assert not work_folder_of(out).exists()  # refused before any chunk was made
    vidsr.upscale_video(vfr_mkv, out, model=random_espcn, encoder="ffv1", chunk_seconds=1, overwrite=True)
    assert len(frames_of(out)) == 30


def test_chunked_av1_output_is_joined(make_clip, random_espcn, tmp_path):
    """AV1 chunks are read with the libdav1d decoder, which PyAV took for an encoder's name when copying."""
    src = make_clip("in.mkv", width=64, height=48, frames=16, rate=Fraction(8), codec="ffv1", options=(("g", "8"),))
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn, encoder="libsvtav1", chunk_seconds=1)
    assert vidsr.probe(out).video.codec == "av1" and len(frames_of(out)) == 16


def test_a_cancelled_chunk_leaves_no_partial_file(vfr_mkv, random_espcn, tmp_path):
    cancel = threading.Event()

    def cancel_once_written(progress: vidsr.Progress) -> None:
        time.sleep(0.5)  # the encoder thread writes the first frames: the chunk's file is begun
        cancel.set()

    with pytest.raises(Cancelled):
        vidsr.upscale_video(vfr_mkv, tmp_path / "out.mkv", model=random_espcn, encoder="ffv1",  # no encoder delay
                            chunk_seconds=1, cancel=cancel, progress=cancel_once_written)
    work = work_folder_of(tmp_path / "out.mkv")
    assert (work / "manifest.json").is_file()  # kept for a rerun
    assert not list(work.glob("*chunk-*"))


@pytest.mark.parametrize("suffix", [".webm", ".ogv"])
def test_chunks_are_encoded_as_a_single_run_would_for_the_output_format(random_espcn, tmp_path, suffix):
    """Chunks are written to NUT files, whose own default codec (H.264) WebM and Ogg cannot hold: the job
    must pick the encoder for the output's format, as a single run does."""
    src = h264_clip(tmp_path / "in.mp4", ())
    single = vidsr.upscale_video(src, tmp_path / f"single{suffix}", model=random_espcn, chunk_seconds=0)
    chunked = vidsr.upscale_video(src, tmp_path / f"chunked{suffix}", model=random_espcn, chunk_seconds=1)
    assert probe(chunked).video.codec == probe(single).video.codec in ("vp9", "vp8")
    assert [t for t, _ in frames_of(chunked)] == [t for t, _ in frames_of(single)]
    assert not work_folder_of(chunked).exists()


def test_a_raw_frame_output_runs_in_one_piece_with_a_notice(random_espcn, tmp_path, caplog):
    src = h264_clip(tmp_path / "in.mp4", ())
    out = vidsr.upscale_video(src, tmp_path / "out.y4m", model=random_espcn, chunk_seconds=1)
    assert "in.mp4: .y4m files hold raw frames, which chunks cannot keep; upscaled in one piece" in caplog.text
    assert len(frames_of(out)) == 32 and not work_folder_of(out).exists()


def test_what_the_pixel_format_loses_is_said_once_per_chunked_job(vfr_mkv, random_espcn, tmp_path, caplog):
    vidsr.upscale_video(vfr_mkv, tmp_path / "out.mkv", model=random_espcn, encoder="mpeg4", chunk_seconds=1)
    said = [r.getMessage() for r in caplog.records if "takes no yuv420p10le" in r.getMessage()]
    assert said == ["mpeg4 takes no yuv420p10le: 10-bit samples become 8-bit (-c ffv1 into .mkv keeps everything; "
                    "--pix-fmt to choose)"]


def test_a_last_chunk_of_one_frame_keeps_the_encoders_dts(random_espcn, tmp_path):
    """A one-frame GOP at the end is a chunk whose only packet NUT gives back without its dts: it is rebuilt
    with the other chunks' reordering delay, as one encoder run would have set it (not pts-like stamps one
    tick apart, which MP4 stores as frame durations)."""
    spec = ClipSpec(width=64, height=48, frames=25, rate=Fraction(8),
                    options=(("crf", "20"), ("g", "8"), ("keyint_min", "8"), ("sc_threshold", "0"), ("bf", "3")))
    src = write_clip(tmp_path / "in.mp4", spec, frames=[pattern_frame(64, 48, t) for t in range(spec.frames)])
    assert len(keyframe_times(src)) == 4
    single = vidsr.upscale_video(src, tmp_path / "single.mp4", model=random_espcn)
    chunked = vidsr.upscale_video(src, tmp_path / "chunked.mp4", model=random_espcn, chunk_seconds=1)

    def stamps(path: Path) -> tuple[list[int], list[int]]:
        """Sorted pts, and dts in decode order (the two encoders may place their B-frames apart)."""
        with av.open(str(path)) as c:
            packets = [p for p in c.demux(video=0) if p.size]
        return sorted(p.pts for p in packets), [p.dts for p in packets]

    assert stamps(chunked) == stamps(single)
