"""Web demo handlers on tiny generated clips: limits, sessions and cleanup, preview, full job, cancel."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import vidsr
from vidsr.errors import Cancelled, InputError, VidsrError
from vidsr.tools.sample import ClipSpec, pattern_frame, write_clip
from web import handlers
from web.cli import add_arguments
from web.handlers import JobOptions
from web.limits import Limits, parse_resolution
from web.sessions import SessionStore

CLIP_W, CLIP_H, CLIP_FRAMES, CLIP_FPS = 64, 48, 8, 8


def make_clip(path: Path, frames: int = CLIP_FRAMES, audio: bool = True) -> Path:
    """H.264 (+ AAC audio) with vidsr's sample generator."""
    return write_clip(path, ClipSpec(width=CLIP_W, height=CLIP_H, frames=frames, rate=Fraction(CLIP_FPS),
                                     audio=audio))


def stream_kinds(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [stream.type for stream in container.streams]


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture
def store(tmp_path: Path):
    store = SessionStore(tmp_path / "sessions")
    yield store
    store.close()


def upload_copy(source: Path, tmp_path: Path, name: str | None = None) -> Path:
    """What Gradio hands the upload handler: a file in its own upload folder, which the handler moves away."""
    target = tmp_path / "gradio-upload" / (name or source.name)
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


# --- limits and options ---------------------------------------------------------------------------------------

def test_limits_reject_over_resolution_duration_and_size(clip: Path, tmp_path: Path) -> None:
    info = vidsr.probe(clip)
    Limits(max_resolution=(64, 48), max_duration_s=1.5).check_media(info)
    Limits(max_resolution=(48, 64)).check_media(info)  # the same picture, limit given in portrait
    with pytest.raises(InputError, match=r"64x48; this server accepts up to 32x32"):
        Limits(max_resolution=(32, 32)).check_media(info)
    with pytest.raises(InputError, match=r"lasts 1 s; this server accepts up to 0.5 s"):
        Limits(max_duration_s=0.5).check_media(info)
    with pytest.raises(InputError, match=r"this server accepts up to 0.001 MB"):
        Limits(max_upload_mb=0.001).check_size(clip)
    Limits(max_upload_mb=None, max_duration_s=None, max_resolution=None).check_media(info)
    assert parse_resolution("1280x720") == (1280, 720)
    with pytest.raises(ValueError):
        parse_resolution("1280")


def test_command_line_defaults_to_loopback_and_parses_limits() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.share, args.auth, args.max_resolution) == ("127.0.0.1", False, None, (1920, 1080))
    args = parser.parse_args(["--auth", "ann:s3:cret", "--max-resolution", "0", "--max-duration", "30"])
    assert args.auth == ("ann", "s3:cret") and args.max_resolution is None and args.max_duration == 30
    with pytest.raises(SystemExit):
        parser.parse_args(["--auth", "nopassword"])


def test_cli_has_web_subcommand() -> None:
    from vidsr.cli import build_parser

    args = build_parser().parse_args(["web", "--port", "0", "--max-upload-mb", "5"])
    assert args.port == 0 and args.max_upload_mb == 5 and args.func.__module__ == "web.cli"


def test_safe_name_never_yields_a_path() -> None:
    assert handlers.safe_name("../../etc/passwd") == "passwd"
    assert handlers.safe_name("my clip (1).MP4") == "my_clip_1.mp4"
    assert handlers.safe_name("..") == "upload"


# --- sessions ------------------------------------------------------------------------------------------------

def test_session_folders_are_removed_on_release_sweep_and_close(store: SessionStore) -> None:
    first, second = store.get("a"), store.get("b")
    assert first is store.get("a") and first.directory.parent == store.root and first.directory.is_dir()
    (first.directory / "file").write_bytes(b"x")
    store.release("a")
    assert not first.directory.exists() and first.cancel_event.is_set()
    assert store.get("a") is not first  # a returning session starts afresh
    store.idle_timeout_s = 0
    assert sorted(store.sweep()) == ["a", "b"] and not second.directory.exists() and len(store) == 0
    store.get("c")
    store.close()
    assert not store.root.exists()


def test_folder_in_use_outlives_release_until_the_handler_leaves(store: SessionStore) -> None:
    workspace = store.get("s")
    with workspace.in_use():
        store.release("s")
        assert workspace.directory.is_dir() and workspace.cancel_event.is_set()
        store.idle_timeout_s = 0
        assert store.sweep() == []  # released already; nothing else to sweep
    assert not workspace.directory.exists()
    with pytest.raises(RuntimeError, match="closed"):
        workspace.in_use().__enter__()


def test_cancel_reaches_a_job_still_waiting_in_the_queue(store: SessionStore) -> None:
    workspace = store.get("s")
    workspace.arm()
    flag = workspace.cancel_event
    workspace.cancel()
    with workspace.in_use():
        workspace.arm()  # a second request while one runs keeps the raised flag
        assert workspace.cancel_event is flag and flag.is_set()
    workspace.arm()
    assert not workspace.cancel_event.is_set()


def test_waiting_for_the_job_to_end_after_cancel(store: SessionStore) -> None:
    """The Cancel button answers only once the job has stopped (or after its timeout)."""
    workspace = store.get("s")
    assert workspace.wait_for_job_end(0)
    started, release = threading.Event(), threading.Event()

    def job() -> None:
        with workspace.job():
            started.set()
            release.wait(5)

    worker = threading.Thread(target=job)
    worker.start()
    started.wait(5)
    assert not workspace.wait_for_job_end(0.2)
    threading.Timer(0.2, release.set).start()
    assert workspace.wait_for_job_end(5) and not workspace.job_running
    worker.join()


# --- uploads ---------------------------------------------------------------------------------------------------

def test_upload_moves_into_the_session_folder_and_describes_the_media(store, clip, tmp_path) -> None:
    workspace = store.get("s")
    uploaded = upload_copy(clip, tmp_path, "my clip.mp4")
    upload = handlers.accept_upload(workspace, uploaded, Limits())
    assert not uploaded.exists() and upload.path == workspace.directory / "input" / "my_clip.mp4"
    assert upload.summary() == "**my_clip.mp4** · video · 64x48 · 8 fps · 1.0 s · 8 frames · audio (aac)"
    assert handlers.current_upload(workspace) is upload


def test_corrupt_or_oversized_upload_is_refused_and_removed(store, clip, tmp_path) -> None:
    workspace = store.get("s")
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError, match=r"notes\.mp4: not a readable media file"):
        handlers.accept_upload(workspace, garbage, Limits())
    with pytest.raises(InputError, match="accepts up to 32x32"):
        handlers.accept_upload(workspace, upload_copy(clip, tmp_path), Limits(max_resolution=(32, 32)))
    with pytest.raises(InputError, match="accepts up to 0.001 MB"):
        handlers.accept_upload(workspace, upload_copy(clip, tmp_path), Limits(max_upload_mb=0.001))
    assert not (tmp_path / "gradio-upload" / clip.name).exists()
    assert list(workspace.directory.iterdir()) == [] and workspace.upload is None
    with pytest.raises(InputError, match="upload a video or an image first"):
        handlers.process(workspace, JobOptions())


def test_no_new_upload_while_a_job_works_on_the_current_one(store, clip, tmp_path) -> None:
    workspace = store.get("s")
    first = handlers.accept_upload(workspace, upload_copy(clip, tmp_path), Limits())
    with workspace.job(), pytest.raises(InputError, match="still running"):
        handlers.accept_upload(workspace, upload_copy(clip, tmp_path, "other.mp4"), Limits())
    assert workspace.upload is first and first.path.exists()
    with workspace.job(), pytest.raises(InputError, match="still running"):
        handlers.process(workspace, JobOptions())


def test_errors_shown_in_the_page_are_one_line_without_server_folders(store, tmp_path) -> None:
    from web.app import status_line

    workspace = store.get("s")
    garbage = tmp_path / "my_broken.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3 truncated")
    with pytest.raises(VidsrError) as raised:
        handlers.accept_upload(workspace, garbage, Limits())
    line = status_line(workspace, raised.value)
    # Markdown would turn my_broken_x into italics: the name is escaped and shown as it is
    assert line.startswith("⚠ my\\_broken.mkv: ") and "\n" not in line and str(store.root) not in line


@pytest.mark.parametrize("name", [".hidden.mp4", "..\\..\\x.mp4", "...mp4"])
def test_dotfiles_and_windows_paths_upload_under_a_plain_name(store, clip, tmp_path, name) -> None:
    workspace = store.get("s")
    upload = handlers.accept_upload(workspace, upload_copy(clip, tmp_path, name), Limits())
    assert upload.path.parent == workspace.directory / "input" and not upload.path.name.startswith(".")
    assert upload.path.suffix == ".mp4" and "\\" not in upload.path.name and upload.info.video.width == CLIP_W


def test_unused_uploads_are_swept_and_session_folders_kept(tmp_path) -> None:
    from web.sessions import sweep_unused_uploads

    uploads = tmp_path / "gradio"
    store = SessionStore(uploads)
    try:
        session_file = store.get("s").directory / "input.mp4"
        old, fresh = uploads / "a1b2" / "big.mp4", uploads / "c3d4" / "new.mp4"
        for path in (session_file, old, fresh):
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x")
        long_ago = time.time() - 3600
        for path in (session_file, old, old.parent):
            os.utime(path, (long_ago, long_ago))
        assert sweep_unused_uploads(uploads, keep=store.root, max_age_s=600) == [old]
        assert session_file.exists() and fresh.exists() and not old.exists()
        os.utime(old.parent, (long_ago, long_ago))
        sweep_unused_uploads(uploads, keep=store.root, max_age_s=600)
        assert not old.parent.exists() and store.root.is_dir()  # the emptied upload folder goes next
    finally:
        store.close()


def test_private_temp_folder_is_gradios_temp_folder(tmp_path, monkeypatch) -> None:
    from web.sessions import private_temp_folder

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "shared"))
    folder = private_temp_folder()
    assert folder.parent == tmp_path / "shared" and folder.name.startswith("vidsr-web-") and folder.is_dir()
    assert os.environ["GRADIO_TEMP_DIR"] == str(folder)


# --- preview, job, cancel --------------------------------------------------------------------------------------

def test_preview_shows_the_chosen_frame_next_to_bicubic(store, clip, tmp_path) -> None:
    workspace = store.get("s")
    upload = handlers.accept_upload(workspace, upload_copy(clip, tmp_path), Limits())
    preview = handlers.make_preview(upload, 0.5, JobOptions())
    assert preview.at_seconds == pytest.approx(0.5)
    np.testing.assert_array_equal(preview.original, handlers.read_frame(clip, 0.5)[0])
    assert preview.original.shape == (48, 64, 3) and preview.upscaled.shape == preview.bicubic.shape == (96, 128, 3)
    # the model's result is an upscaled image of this frame, not of another one, and not bicubic itself
    assert np.abs(preview.upscaled.astype(int) - preview.bicubic).mean() < 12
    assert not np.array_equal(preview.upscaled, preview.bicubic)
    bicubic_png, upscaled_png = handlers.save_preview(workspace, preview)
    np.testing.assert_array_equal(np.asarray(Image.open(upscaled_png)), preview.upscaled)
    assert bicubic_png.parent.parent == workspace.directory


def test_preview_of_a_truncated_video_says_it_does_not_decode(clip, tmp_path) -> None:
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    with pytest.raises(VidsrError, match=r"^cut\.mp4: the frame at 0.90 s does not decode"):
        handlers.read_frame(truncated, 0.9)


def test_full_job_reports_progress_and_keeps_audio(store, clip, tmp_path) -> None:
    workspace = store.get("s")
    handlers.accept_upload(workspace, upload_copy(clip, tmp_path), Limits())
    reports: list[vidsr.Progress] = []
    workspace.arm()
    output = handlers.process(workspace, JobOptions(crf=30), reports.append, report_interval_s=0.01)
    assert output == workspace.result and output.parent == workspace.directory / "output" and output.suffix == ".mp4"
    info = vidsr.probe(output)
    assert (info.video.width, info.video.height) == (128, 96)
    assert decoded_frames(output) == CLIP_FRAMES and stream_kinds(output) == ["video", "audio"]
    assert reports and reports[-1].frames == CLIP_FRAMES
    assert [r.frames for r in reports] == sorted(r.frames for r in reports)
    assert handlers.describe_progress(reports[-1]).startswith(f"{CLIP_FRAMES}/{CLIP_FRAMES} frames · ")


def test_cancel_stops_the_job_and_leaves_no_output(store, tmp_path) -> None:
    workspace = store.get("s")
    longer = make_clip(tmp_path / "long.mp4", frames=48, audio=False)
    handlers.accept_upload(workspace, longer, Limits())
    workspace.arm()

    def cancel_on_first_report(progress: vidsr.Progress) -> None:
        workspace.cancel()

    with pytest.raises(Cancelled):
        handlers.process(workspace, JobOptions(), cancel_on_first_report, report_interval_s=0.001)
    assert workspace.result is None and list((workspace.directory / "output").iterdir()) == []
    with pytest.raises(Cancelled, match="before it started"):  # still cancelled until the next request
        handlers.process(workspace, JobOptions())


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_image_upload_gives_a_colour_png(store, tmp_path, name) -> None:
    from web.app import seek_slider

    workspace = store.get("s")
    picture = tmp_path / name
    Image.fromarray((pattern_frame(40, 30, 0) * 255).astype(np.uint8)).save(picture)
    upload = handlers.accept_upload(workspace, picture, Limits())
    assert upload.is_image and upload.summary() == f"**{name}** · image · 40x30"
    assert seek_slider(upload).visible is False  # a 0..0 slider raised in Gradio and broke the page
    preview = handlers.make_preview(upload, 0, JobOptions())
    assert preview.upscaled.shape == (60, 80, 3)
    output = handlers.process(workspace, JobOptions())
    result = Image.open(output)
    assert output.suffix == ".png" and result.size == (80, 60) and result.mode == "RGB"
    # the same picture as the preview's model run, colour included (a grey PNG used to come out)
    assert np.abs(np.asarray(result).astype(int) - preview.upscaled.astype(int)).mean() < 8


def test_one_frame_mp4_is_a_video_and_gives_an_mp4(store, tmp_path) -> None:
    from web.app import seek_slider

    workspace = store.get("s")
    upload = handlers.accept_upload(workspace, make_clip(tmp_path / "still.mp4", frames=1, audio=False), Limits())
    assert not upload.is_image and upload.summary().startswith("**still.mp4** · video · 64x48")
    assert seek_slider(upload).visible is False  # one frame: nothing to choose
    output = handlers.process(workspace, JobOptions())
    assert output.suffix == ".mp4" and decoded_frames(output) == 1 and vidsr.probe(output).video.codec == "h264"


def test_mkv_result_is_shown_through_an_mp4_remux(store, tmp_path) -> None:
    workspace = store.get("s")
    clip = write_clip(tmp_path / "clip.mkv", ClipSpec(width=CLIP_W, height=CLIP_H, frames=CLIP_FRAMES,
                                                       audio=True, subtitles=True))
    handlers.accept_upload(workspace, clip, Limits())
    output = handlers.process(workspace, JobOptions(crf=30))
    shown = handlers.browser_copy(workspace, output)
    assert output.suffix == ".mkv" and stream_kinds(output) == ["video", "audio", "subtitle"]  # the download
    assert shown.suffix == ".mp4" and stream_kinds(shown) == ["video", "audio"]
    with av.open(str(output)) as original, av.open(str(shown)) as copy:  # the same packets, not re-encoded
        assert [bytes(p) for p in original.demux(video=0) if p.size] == [bytes(p) for p in copy.demux(video=0)
                                                                          if p.size]
    assert decoded_frames(shown) == CLIP_FRAMES and vidsr.probe(shown).video.width == 2 * CLIP_W
    handlers.forget_upload(workspace)
    assert not shown.exists()


def test_av1_mkv_result_is_remuxed_too(store, tmp_path) -> None:
    """FFmpeg decodes AV1 with libdav1d: the codec, not the decoder, decides what a browser plays."""
    workspace = store.get("s")
    result = write_clip(tmp_path / "result.mkv", ClipSpec(width=CLIP_W, height=CLIP_H, frames=4, codec="libsvtav1"))
    shown = handlers.browser_copy(workspace, result)
    assert shown.suffix == ".mp4" and vidsr.probe(shown).video.codec == "av1"


def test_progress_is_relayed_from_the_calling_thread() -> None:
    caller = threading.current_thread()
    seen: list[tuple[int, bool]] = []

    def job(progress) -> str:
        for frames in range(1, 4):
            progress(vidsr.Progress(frames=frames, total=3, elapsed=0.1 * frames))
            time.sleep(0.05)
        return "done"

    def report(update: vidsr.Progress) -> None:
        seen.append((update.frames, threading.current_thread() is caller))

    assert handlers.run_reporting(job, report, interval_s=0.01) == "done"
    assert seen[-1] == (3, True) and all(same for _, same in seen)
    with pytest.raises(ZeroDivisionError):
        handlers.run_reporting(lambda progress: 1 / 0, report, interval_s=0.01)


def test_model_labels_show_scale_speed_and_psnr() -> None:
    models = vidsr.list_models()
    assert models, "no bundled models"
    label = handlers.model_label(models[0])
    assert f"×{models[0].scale}" in label and handlers.speed_class(models[0].gmacs_1080p) in label
    real_world = dataclasses.replace(models[0], pairs="degraded")
    assert "real-world" in handlers.model_label(real_world) and "real-world" not in label
    assert handlers.format_duration(3725) == "1:02:05" and handlers.format_duration(65) == "1:05"
    assert "libx264" in handlers.available_encoders()


def test_progress_text_handles_unknown_and_overrun_totals() -> None:
    assert handlers.describe_progress(vidsr.Progress(frames=30, total=120, elapsed=2.0)) == \
        "30/120 frames · 15.0 fps · ETA 0:06"
    assert handlers.describe_progress(vidsr.Progress(frames=5, total=None, elapsed=1.0)) == "5 frames · 5.0 fps"
    overrun = vidsr.Progress(frames=14, total=13, elapsed=2.0)  # the container's duration was short
    assert handlers.known_total(overrun) is None and handlers.describe_progress(overrun).startswith("14 frames")
