"""End-to-end engine tests on clips generated with PyAV: streams, timestamps, colour, depth, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import vidsr
from vidsr.color import planes_to_rgb
from vidsr.errors import Cancelled, DecodeError, EncodeError, InputError, OutputError
from vidsr.media.frames import frame_to_planes, plane_layout
from vidsr.media.info import ColorInfo, ContentLight, probe
from vidsr.media.pipeline import cpu_encoder_threads
from vidsr.quality.metrics import psnr, rgb_to_y
from vidsr.quality.resize import imresize_np
from vidsr.tools.sample import ClipSpec, pattern_frame, write_clip


def decoded_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def packets(path: Path, kind: str) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == kind)
        return [(p.pts, bytes(p)) for p in c.demux(stream) if p.size]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_odd_size_vfr_mkv_keeps_every_timestamp_audio_and_subtitles(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=321, height=241, frames=10, vfr=True, audio=True, subtitles=True,
                    codec="ffv1", options=())
    assert probe(src).video.frame_count is None  # Matroska stores no count: progress must cope
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn, batch_size=3)

    info = probe(out)
    assert (info.video.width, info.video.height) == (642, 482)
    in_times, out_times = decoded_times(src), decoded_times(out)
    assert len(out_times) == 10
    assert out_times == in_times  # same time base (1/1000 in Matroska): exact
    assert len(set(np.diff([float(t) for t in in_times]).round(3))) > 1  # the clip really is VFR
    assert info.video.duration == pytest.approx(probe(src).video.duration, abs=1e-3)
    assert packets(out, "audio") == packets(src, "audio")
    assert packets(out, "subtitle") == packets(src, "subtitle")


def test_track_languages_titles_and_flags_are_kept(make_clip, random_espcn, tmp_path):
    src = tmp_path / "tracks.mkv"
    flags = {"eng": av.stream.Disposition.default, "jpn": av.stream.Disposition.forced}
    with av.open(str(make_clip("in.mkv", width=64, height=48, frames=3, audio=True))) as clip, \
            av.open(str(src), "w") as c:
        video = c.add_stream_from_template(clip.streams.video[0])
        video.metadata["language"] = "fin"
        tracks = []
        for language, flag in flags.items():
            track = c.add_stream_from_template(clip.streams.audio[0])
            track.metadata.update({"language": language, "title": f"{language} commentary"})
            track.disposition = flag
            tracks.append(track)
        for packet in clip.demux():
            if packet.size:
                for out in [video] if packet.stream.type == "video" else tracks:
                    packet.stream = out
                    c.mux(packet)
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn)
    with av.open(str(out)) as c:
        kept = [(s.type, s.metadata.get("language"), s.metadata.get("title"), s.disposition) for s in c.streams]
    assert kept == [("video", "fin", None, av.stream.Disposition(0)),
                    *(("audio", language, f"{language} commentary", flag) for language, flag in flags.items())]


def test_subtitle_fonts_attached_to_mkv_are_kept(make_clip, random_espcn, tmp_path, caplog):
    src = tmp_path / "fonts.mkv"
    font = bytes(range(256)) * 8
    with av.open(str(make_clip("in.mkv", width=64, height=48, frames=3, subtitles=True))) as clip, \
            av.open(str(src), "w") as c:
        streams = {s.index: c.add_stream_from_template(s) for s in clip.streams}
        c.add_attachment(name="Sub Font.ttf", mimetype="font/ttf", data=font)
        for packet in clip.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                c.mux(packet)
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn)
    with av.open(str(out)) as c:
        attachments = [(s.name, s.mimetype, bytes(s.data)) for s in c.streams if s.type == "attachment"]
    assert attachments == [("Sub Font.ttf", "font/ttf", font)]
    assert [s.codec for s in probe(out).others if s.kind == "attachment"] == ["Sub Font.ttf (font/ttf)"]
    assert packets(out, "subtitle") == packets(src, "subtitle")
    vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn)  # MP4 has no attachments: said so
    assert "attachment Sub Font.ttf" in caplog.text and "dropped (use .mkv to keep it)" in caplog.text


def test_elementary_stream_without_timestamps_gets_them_from_its_rate(random_espcn, tmp_path):
    src = tmp_path / "raw.h264"
    with av.open(str(src), "w", format="h264") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    out = vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn)
    assert decoded_times(out) == [Fraction(i, 25) for i in range(5)]
    assert probe(out).video.frame_rate == 25


def test_a_file_cut_short_is_upscaled_with_a_warning(make_clip, random_espcn, tmp_path, caplog):
    whole = make_clip("whole.mkv", width=64, height=48, frames=96)  # 4 s declared in the header
    vidsr.upscale_video(whole, tmp_path / "whole_x2.mkv", model=random_espcn)
    assert "truncated" not in caplog.text
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # an interrupted download
    out = vidsr.upscale_video(cut, tmp_path / "cut_x2.mkv", model=random_espcn)
    assert 0 < len(decoded_times(out)) < 96
    assert "cut.mkv: the video stops" in caplog.text and "it may be truncated" in caplog.text


def test_mpeg_ts_keeps_its_audio_without_re_encoding(make_clip, random_espcn, tmp_path):
    # FFmpeg cannot list what the MPEG-TS muxer accepts (AAC is not in PyAV's supported_codecs there).
    src = make_clip("in.ts", width=64, height=48, frames=6, audio=True)
    out = vidsr.upscale_video(src, tmp_path / "out.ts", model=random_espcn)
    assert [s.kind for s in probe(out).others] == ["audio"]
    assert [data for _, data in packets(out, "audio")] == [data for _, data in packets(src, "audio")]
    assert len(decoded_times(out)) == 6


def test_output_container_picks_the_encoder(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=3, audio=True)
    video = probe(vidsr.upscale_video(src, tmp_path / "out.webm", model=random_espcn)).video
    assert video.codec == "vp9"  # WebM cannot hold H.264: its own codec, at constant quality
    with pytest.raises(EncodeError, match="the webm container cannot hold libx264 video"):
        vidsr.upscale_video(src, tmp_path / "bad.webm", model=random_espcn, encoder="libx264")
    with pytest.raises(EncodeError, match="encoder gif would drop the colour"):
        vidsr.upscale_video(src, tmp_path / "bad.gif", model=random_espcn)
    assert not list(tmp_path.glob("bad*")) and leftovers(tmp_path) == []


def test_ten_bit_bt601_in_gives_ten_bit_bt601_out(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=96, height=64, frames=6, pix_fmt="yuv420p10le", matrix=6, primaries=6, transfer=6)
    out = vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn)
    video = probe(out).video
    assert video.pix_fmt == "yuv420p10le" and video.bit_depth == 10
    assert (video.color.matrix, video.color.primaries, video.color.transfer) == (6, 6, 6)
    assert decoded_times(out) == decoded_times(src)
    with av.open(str(out)) as c:
        luma = frame_to_planes(next(c.decode(video=0)))[0]
    assert luma.dtype == np.uint16 and (luma % 4 != 0).any()  # real 10-bit codes, not 8-bit ones shifted up


def test_hdr10_mastering_metadata_is_carried_by_x265_and_svt_av1(make_clip, random_espcn, tmp_path, caplog):
    hdr10 = "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
    src = make_clip("hdr.mkv", width=64, height=48, frames=3, codec="libx265", pix_fmt="yuv420p10le", matrix=9,
                    primaries=9, transfer=16, options=(("x265-params", f"log-level=error:hdr10=1:{hdr10}"),))
    source = probe(src).video
    assert source.content_light == ContentLight(1000, 400)
    assert source.mastering_display.red == (Fraction(34000, 50000), Fraction(16000, 50000))
    assert source.mastering_display.max_luminance == 1000
    for encoder in ("libx265", "libsvtav1"):
        video = probe(vidsr.upscale_video(src, tmp_path / f"{encoder}.mkv", model=random_espcn, encoder=encoder)).video
        assert (video.color.primaries, video.color.transfer, video.content_light) == (9, 16, source.content_light)
        display, expected = video.mastering_display, source.mastering_display  # AV1 rounds xy to 1/65536
        for name in ("red", "green", "blue", "white"):
            assert getattr(display, name) == pytest.approx(getattr(expected, name), abs=2e-5)
        assert display.max_luminance == 1000 and display.min_luminance == pytest.approx(0.0001, abs=3e-5)
    video = probe(vidsr.upscale_video(src, tmp_path / "x264.mkv", model=random_espcn)).video
    assert video.color.transfer == 16 and video.mastering_display is None
    assert "HDR10 mastering metadata is written by libx265 and libsvtav1 only" in caplog.text


def test_interlaced_input_is_flagged_and_warned_about(make_clip, random_espcn, tmp_path, caplog):
    progressive = make_clip("p.mp4", width=64, height=48, frames=3)
    interlaced = make_clip("i.mp4", width=64, height=48, frames=3, options=(("x264-params", "interlaced=1:tff=1"),))
    assert not probe(progressive).video.interlaced and probe(interlaced).video.interlaced
    vidsr.upscale_video(progressive, tmp_path / "p_x2.mp4", model=random_espcn)
    assert "interlaced" not in caplog.text
    vidsr.upscale_video(interlaced, tmp_path / "i_x2.mp4", model=random_espcn)
    assert "i.mp4: interlaced" in caplog.text and "deinterlace first" in caplog.text


def test_untagged_sd_input_is_tagged_with_the_matrix_used(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=96, height=64, frames=3, matrix=2, primaries=2, transfer=2)
    video = probe(vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn)).video
    # SD input without tags is BT.601 by convention; the larger output must say so explicitly.
    assert (video.color.matrix, video.color.primaries, video.color.transfer) == (6, 6, 6)


@pytest.mark.parametrize("matrix", [1, 6])
def test_rgb_model_path_honours_the_colour_matrix(make_clip, random_rgb_model, tmp_path, matrix):
    """A flat colour encoded with BT.709 or BT.601 decodes to the same RGB through the engine's conversion."""
    flat = [np.full((64, 96, 3), (0.8, 0.3, 0.1), np.float32)] * 2
    src = write_clip(tmp_path / f"flat{matrix}.mkv", ClipSpec(width=96, height=64, frames=2, matrix=matrix,
                                                              primaries=matrix, transfer=matrix, codec="ffv1",
                                                              options=()), frames=flat)
    info = probe(src).video
    with av.open(str(src)) as c:
        planes = [torch.from_numpy(p.copy())[None] for p in frame_to_planes(next(c.decode(video=0)))]
    rgb = planes_to_rgb(planes, plane_layout("yuv420p"), info.color)[0, :, 8:-8, 8:-8].mean(dim=(1, 2))
    assert rgb.numpy() == pytest.approx([0.8, 0.3, 0.1], abs=0.01)
    wrong = planes_to_rgb(planes, plane_layout("yuv420p"), ColorInfo(matrix=1 if matrix == 6 else 6))
    assert np.abs(wrong[0, :, 8:-8, 8:-8].mean(dim=(1, 2)).numpy() - [0.8, 0.3, 0.1]).max() > 0.02

    out = vidsr.upscale_video(src, tmp_path / f"out{matrix}.mkv", model=random_rgb_model, encoder="ffv1")
    assert probe(out).video.color.matrix == matrix


def test_sar_and_rotation_are_kept(make_clip, random_espcn, tmp_path):
    src = tmp_path / "rot.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(4, 3)
        s.set_display_rotation(90)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    video = probe(vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn)).video
    assert video.sar == Fraction(4, 3)
    assert video.rotation == probe(src).video.rotation != 0


def test_encoder_crf_preset_and_pix_fmt_are_applied(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=4)
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn, encoder="libx265", crf=30,
                              preset="ultrafast", pix_fmt="yuv444p")
    video = probe(out).video
    assert (video.codec, video.pix_fmt) == ("hevc", "yuv444p")
    with pytest.raises(EncodeError, match="does not support pix_fmt"):
        vidsr.upscale_video(src, tmp_path / "bad.mp4", model=random_espcn, encoder="libsvtav1", pix_fmt="yuv444p")
    with pytest.raises(EncodeError, match="unknown encoder"):
        vidsr.upscale_video(src, tmp_path / "bad.mp4", model=random_espcn, encoder="nope264")
    assert not list(tmp_path.glob("bad*")) and leftovers(tmp_path) == []


def write_image(path: Path, rgb: np.ndarray, pix_fmt: str) -> Path:
    """A one-picture file (codec from the suffix) of float RGB or RGBA `rgb`, stored as `pix_fmt`."""
    frame = av.VideoFrame.from_ndarray((rgb * 65535).round().astype(np.uint16),
                                       format="rgba64le" if rgb.shape[-1] == 4 else "rgb48le")
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as c:
        stream = c.add_stream(vidsr.media.pipeline.IMAGE_ENCODERS[path.suffix], rate=1)
        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, pix_fmt
        c.mux(stream.encode(frame.reformat(format=pix_fmt)))
        c.mux(stream.encode(None))
    return path


def luma_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BT.601 luma and the two colour differences (B - Y, R - Y) of float RGB, on a 0-255 scale."""
    y = rgb @ np.array([0.299, 0.587, 0.114])
    return 255 * y, 255 * np.stack([rgb[..., 2] - y, rgb[..., 0] - y], axis=-1)


@pytest.mark.parametrize(("name", "pix_fmt", "out_pix_fmt"), [
    ("rgb.png", "rgb24", "rgb24"), ("rgb16.png", "rgb48be", "rgb48be"), ("rgba.png", "rgba", "rgba"),
    ("rgba16.png", "rgba64be", "rgba64be"), ("gray.png", "gray", "gray"), ("rgb.bmp", "bgr24", "bgr24"),
    ("rgb.tif", "rgb24", "rgb24"), ("rgba.tif", "rgba", "rgba"),
])
def test_image_in_image_out_keeps_colour_depth_and_alpha(tmp_path, name, pix_fmt, out_pix_fmt):
    """The bundled Y model sharpens the luma; the colour (and alpha) is the bicubic one, never dropped or
    quantised."""
    hr = pattern_frame(94, 66, 0)
    if pix_fmt == "gray":
        hr = np.repeat(hr @ np.array([0.299, 0.587, 0.114])[:, None], 3, axis=-1)
    alpha = "rgba" in pix_fmt
    if alpha:
        hr = np.dstack([hr, np.linspace(0.1, 0.9, 94)[None, :].repeat(66, axis=0)])
    src = write_image(tmp_path / name, imresize_np(hr, 0.5).clip(0, 1), pix_fmt)
    out = vidsr.upscale_path(src, tmp_path / f"x2_{name}")[0]
    video = probe(out).video
    assert (video.width, video.height, video.pix_fmt) == (94, 66, out_pix_fmt)
    pictures = []
    for path in (src, out):
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            pictures.append(frame.to_ndarray(format="rgba64le" if alpha else "rgb48le").astype(np.float64) / 65535)
    lr, sr = pictures
    bicubic = imresize_np(lr, 2.0).clip(0, 1)
    (hr_y, _), (sr_y, sr_c), (bicubic_y, bicubic_c) = (luma_chroma(x[..., :3]) for x in (hr, sr, bicubic))
    assert psnr(hr_y, sr_y, border=2) > psnr(hr_y, bicubic_y, border=2)
    assert psnr(bicubic_c, sr_c, border=2) > 40
    if alpha:
        assert psnr(255 * bicubic[..., 3], 255 * sr[..., 3], border=2) > 40


def test_alpha_video_keeps_its_alpha_where_the_encoder_can(make_clip, random_espcn, tmp_path):
    clip = make_clip("in.mkv", width=64, height=48, frames=3, codec="ffv1", options=())
    src = tmp_path / "alpha.mkv"
    with av.open(str(clip)) as inp, av.open(str(src), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuva420p"
        for i, frame in enumerate(inp.decode(video=0)):
            rgba = np.dstack([frame.to_ndarray(format="rgb24"), np.full((48, 64), 60 * i + 40, np.uint8)])
            picture = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format="yuva420p")
            picture.pts = i
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    kept = vidsr.upscale_video(src, tmp_path / "kept.mkv", model=random_espcn, encoder="ffv1")
    assert probe(kept).video.pix_fmt == "yuva420p"
    with av.open(str(kept)) as c:
        alphas = [np.median(f.to_ndarray(format="rgba")[..., 3]) for f in c.decode(video=0)]
    assert alphas == pytest.approx([40, 100, 160], abs=1)
    assert probe(vidsr.upscale_video(src, tmp_path / "dropped.mkv", model=random_espcn)).video.pix_fmt == "yuv420p"


def test_cpu_encoder_threads_leave_the_cores_to_the_model():
    assert [cpu_encoder_threads(cores) for cores in (1, 2, 4, 8, 16, 64)] == [1, 2, 2, 2, 4, 16]


def test_partial_files_of_killed_runs_are_removed(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=2)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    stale = tmp_path / f".out.partial-{finished.stdout.strip()}.mp4"  # its process is gone: SIGKILL'd run
    running = tmp_path / f".out.partial-{os.getppid()}.mp4"  # a live process may still be writing it
    for partial in (stale, running):
        partial.write_bytes(b"half")
    # a live writer's target is refused without overwrite (tests/test_robustness.py)
    vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn, overwrite=True)
    assert not stale.exists() and running.exists()


def test_folder_of_media(make_clip, tmp_path, random_espcn):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mkv"):
        (folder / name).write_bytes(make_clip(name, width=64, height=48, frames=2).read_bytes())
    frames = [Image.fromarray((pattern_frame(32, 24, t) * 255).astype(np.uint8)).convert("P") for t in range(3)]
    frames[0].save(folder / "c.gif", save_all=True, append_images=frames[1:], duration=[40, 80, 40])
    written = vidsr.upscale_path(folder, model=random_espcn)
    assert [p.name for p in written] == ["a.mp4", "b.mkv", "c.mp4"]  # GIF cannot hold the result: MP4
    assert [probe(p).video.width for p in written] == [128, 128, 64]
    assert decoded_times(written[2]) == [0, Fraction(4, 100), Fraction(12, 100)]
    assert written[0].parent == tmp_path / "clips_x2"
    (tmp_path / "single").mkdir()
    into = vidsr.upscale_path(folder / "a.mp4", tmp_path / "single", model=random_espcn)  # a folder: like cp
    assert into == [tmp_path / "single" / "a.mp4"] and probe(into[0]).video.width == 128


def test_folder_run_goes_past_a_bad_file_and_resumes(make_clip, tmp_path, random_espcn, caplog):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(make_clip("a.mp4", width=64, height=48, frames=2).read_bytes())
    (folder / "b.mp4").write_text("not a video")
    (folder / "c.mkv").write_bytes(make_clip("c.mkv", width=64, height=48, frames=2).read_bytes())
    with pytest.raises(vidsr.VidsrError, match=r"1 of 3 files failed \(b.mp4\)"):
        vidsr.upscale_path(folder, model=random_espcn)
    out = tmp_path / "clips_x2"
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mkv"]
    assert "b.mp4: not a readable media file" in caplog.text
    (folder / "b.mp4").write_bytes(make_clip("b.mp4", width=64, height=48, frames=2).read_bytes())
    before = (out / "a.mp4").stat().st_mtime_ns
    assert [p.name for p in vidsr.upscale_path(folder, model=random_espcn)] == ["b.mp4"]  # the rest is skipped
    assert (out / "a.mp4").stat().st_mtime_ns == before and "exists, skipped" in caplog.text


def test_model_output_beats_bicubic_on_a_downscaled_clip(tmp_path):
    """The bundled default model restores a 2x-downscaled sharp clip better than bicubic does."""
    hr = [pattern_frame(192, 128, t) for t in range(3)]
    lr = [imresize_np(f, 0.5).clip(0, 1) for f in hr]
    spec = ClipSpec(width=96, height=64, frames=3, pix_fmt="yuv444p", codec="ffv1", options=())
    src = write_clip(tmp_path / "lr.mkv", spec, frames=lr)
    out = vidsr.upscale_video(src, tmp_path / "sr.mkv", encoder="ffv1", pix_fmt="yuv444p")
    with av.open(str(out)) as c:
        sr = [f.to_ndarray(format="rgb24").astype(np.float32) / 255 for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        decoded_lr = [f.to_ndarray(format="rgb24").astype(np.float32) / 255 for f in c.decode(video=0)]
    model_psnr = np.mean([psnr(rgb_to_y(h), rgb_to_y(s), border=4) for h, s in zip(hr, sr, strict=True)])
    bicubic_psnr = np.mean([psnr(rgb_to_y(h), rgb_to_y(imresize_np(lo, 2.0).clip(0, 1)), border=4)
                            for h, lo in zip(hr, decoded_lr, strict=True)])
    assert model_psnr > bicubic_psnr + 0.3


# --- failures: one clear error, nothing left behind ----------------------------------------------------


def test_corrupt_stream_stops_with_frame_index_and_leaves_nothing(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=12)
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 200] = bytes(range(200))  # garbage in the middle of the H.264 payload
    src.write_bytes(bytes(data))
    out = tmp_path / "out.mkv"
    with pytest.raises(DecodeError, match=r"frame \d+"):
        vidsr.upscale_video(src, out, model=random_espcn)
    assert not out.exists() and leftovers(tmp_path) == []
    skipped = vidsr.upscale_video(src, out, model=random_espcn, skip_errors=True)
    assert 0 < len(decoded_times(skipped)) < 12


def test_cancel_event_removes_partial_output(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=40)
    cancel = threading.Event()

    def cancel_after_first(progress: vidsr.Progress) -> None:
        cancel.set()

    with pytest.raises(Cancelled):
        vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn, batch_size=2, progress=cancel_after_first,
                            cancel=cancel)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_output_rules(make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=2)
    with pytest.raises(OutputError, match="overwrite the input"):
        vidsr.upscale_video(src, src, model=random_espcn, overwrite=True)
    with pytest.raises(OutputError, match="directory does not exist"):
        vidsr.upscale_video(src, tmp_path / "missing" / "out.mp4", model=random_espcn)
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        vidsr.upscale_video(src, existing, model=random_espcn)
    assert existing.read_bytes() == b"keep me"
    vidsr.upscale_video(src, existing, model=random_espcn, overwrite=True)
    assert probe(existing).video.width == 128


def test_audio_only_file_is_refused(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        vidsr.upscale_video(path, tmp_path / "out.mp4")


def with_chapters(src: Path, dst: Path) -> Path:
    """Remux `src` into `dst` with two chapters."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        out.set_chapters([
            {"id": 1, "start": 0, "end": 100, "time_base": Fraction(1, 1000), "metadata": {"title": "Intro"}},
            {"id": 2, "start": 100, "end": 250, "time_base": Fraction(1, 1000), "metadata": {"title": "Main"}},
        ])
        for packet in inp.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def chapter_titles(path: Path) -> list[tuple[float, str]]:
    with av.open(str(path)) as c:
        return [(float(ch["start"] * ch["time_base"]), ch["metadata"]["title"]) for ch in c.chapters()]


def test_chapters_kept_and_audio_reencoded_only_where_the_container_needs_it(make_clip, random_espcn, tmp_path,
                                                                             caplog):
    src = with_chapters(make_clip("plain.mkv", width=64, height=48, frames=6, audio=True, subtitles=True),
                        tmp_path / "in.mkv")
    mkv = vidsr.upscale_video(src, tmp_path / "out.mkv", model=random_espcn)
    assert chapter_titles(mkv) == chapter_titles(src) == [(0.0, "Intro"), (0.1, "Main")]
    assert packets(mkv, "audio") == packets(src, "audio")  # Matroska holds AAC: copied, not re-encoded

    webm = vidsr.upscale_video(src, tmp_path / "out.webm", model=random_espcn, encoder="libvpx-vp9")
    with av.open(str(webm)) as c:
        kinds = sorted((s.type, s.codec_context.name) for s in c.streams)
    assert kinds == [("audio", "opus"), ("video", "vp9")]  # WebM cannot hold AAC or SRT
    assert "re-encoding to opus" in caplog.text and "cannot hold it; dropped" in caplog.text


def test_hardware_decoding_falls_back_to_software_with_a_notice(make_clip, random_espcn, tmp_path, caplog):
    src = make_clip("in.mp4", width=64, height=48, frames=4)  # H.264: a codec NVDEC would take
    soft = vidsr.upscale_video(src, tmp_path / "soft.mkv", model=random_espcn, encoder="ffv1")
    hard = vidsr.upscale_video(src, tmp_path / "hard.mkv", model=random_espcn, encoder="ffv1", hwdec="cuda")
    if not torch.cuda.is_available():
        assert "decoding in software" in caplog.text
    assert packets(hard, "video") == packets(soft, "video")
