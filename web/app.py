"""The Gradio page: layout and event wiring only; what each event does lives in web.handlers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

import vidsr
from vidsr.errors import Cancelled, VidsrError
from vidsr.media import sink
from vidsr.models.zoo import DEFAULT_MODEL, model_files
from web import handlers
from web.handlers import JobOptions
from web.limits import Limits
from web.sessions import UPLOAD_TTL_S, SessionStore, Workspace, sweep_unused_uploads

CANCEL_WAIT_S = 10.0  # a job stops between batches, well within this
GPU_QUEUE = "gpu"  # preview and full jobs share it: one model run per GPU at a time
CSS = "#status:empty, #preview-info:empty {display: none}"
SWEEP_INTERVAL_S = 60.0


@dataclass(frozen=True)
class WebSettings:
    limits: Limits = field(default_factory=Limits)
    device: str = "auto"
    concurrency: int = 1
    queue_size: int = 20
    idle_timeout_s: float = 6 * 3600
    models_dir: Path | None = None  # the operator's weight files, offered beside the bundled models
    upload_ttl_s: float = UPLOAD_TTL_S


def crf_for(encoder: str) -> int:
    return sink.DEFAULT_CRF.get(encoder, 23)


def status_line(workspace: Workspace, error: VidsrError) -> str:
    """vidsr's one-line error as the page's status line (Markdown), without the server's folder names.

    Shown in place of Gradio's error state, which marks every output panel with a bare "Error" badge."""
    message = re.sub(re.escape(f"{workspace.directory}/") + r"(?:[^/\s]+/)*", "", str(error))  # keep the name
    return "⚠ " + re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", message)


def seek_slider(upload: handlers.Upload) -> gr.Slider:
    """The preview-time slider, for videos longer than one frame (a range of 0 is not a slider)."""
    video = upload.info.video
    step = round(1 / float(video.frame_rate), 4) if video.frame_rate else 0.04
    if upload.is_image or (video.duration or 0) < 2 * step:
        return gr.Slider(value=0, visible=False)
    return gr.Slider(minimum=0, maximum=round(video.duration, 2), value=0, step=step, visible=True)


def build_app(settings: WebSettings, store: SessionStore) -> gr.Blocks:
    models = vidsr.list_models()
    names = [info.name for info in models] or [DEFAULT_MODEL]
    model_choices = [(handlers.model_label(info), info.name) for info in models] or names
    if settings.models_dir is not None:  # by path; no model upload: visitors cannot make the server load files
        model_choices += [(f"{name} (models folder)", str(path))
                          for name, path in model_files(settings.models_dir).items()]
    default_model = DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]

    def workspace_of(request: gr.Request) -> Workspace:
        return store.get(request.session_hash)

    def options(model: str, precision: str, encoder: str = "libx264", crf: float | None = None) -> JobOptions:
        return JobOptions(model=model, precision=precision, encoder=encoder,
                          crf=None if crf is None else int(crf), device=settings.device)

    def cleared(status: str = "", is_image: bool = False) -> tuple:
        """The page with no upload: empty upload box, info, preview and results, then `status`."""
        return (None, "", gr.Slider(visible=False), None, gr.Video(value=None, visible=not is_image),
                gr.Image(value=None, visible=is_image), None, status)

    def on_upload(path: str, request: gr.Request):
        workspace = workspace_of(request)
        with workspace.in_use():
            try:
                upload = handlers.accept_upload(workspace, Path(path), settings.limits)
            except VidsrError as exc:  # the refused file leaves the box, the reason stays in the status line
                return cleared(status_line(workspace, exc))
        # the box keeps the file; preview and results start empty, in the panel that suits the upload
        return (gr.skip(), upload.summary(), seek_slider(upload), *cleared(is_image=upload.is_image)[3:])

    def on_clear(request: gr.Request):
        workspace = workspace_of(request)
        with workspace.in_use():
            handlers.forget_upload(workspace)
        return cleared()

    def on_preview(model: str, precision: str, at_seconds: float, request: gr.Request):
        workspace = workspace_of(request)
        with workspace.in_use():
            try:
                preview = handlers.make_preview(handlers.current_upload(workspace), at_seconds,
                                                options(model, precision))
            except VidsrError as exc:
                return None, "", status_line(workspace, exc)
            bicubic, upscaled = handlers.save_preview(workspace, preview)
        height, width = preview.original.shape[:2]
        info = (f"Frame at {preview.at_seconds:.2f} s: {width}x{height} → "
                f"{preview.upscaled.shape[1]}x{preview.upscaled.shape[0]} · left bicubic, right {model} "
                f"({preview.model_seconds:.2f} s)")
        return (str(bicubic), str(upscaled)), info, ""

    def on_request_job(request: gr.Request) -> str:
        workspace_of(request).arm()
        return ""  # the result panel shows the queue position, then the progress

    def on_process(model: str, precision: str, encoder: str, crf: float, request: gr.Request,
                   progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio injects it by this default
        workspace = workspace_of(request)

        def report(update: vidsr.Progress) -> None:
            progress((update.frames, handlers.known_total(update)), desc=handlers.describe_progress(update),
                     unit="frames")

        started = time.perf_counter()
        with workspace.in_use():
            try:
                output = handlers.process(workspace, options(model, precision, encoder, crf), report)
                shown = str(output) if workspace.upload.is_image else str(handlers.browser_copy(workspace, output))
            except Cancelled:
                return None, None, None, "Cancelled."
            except VidsrError as exc:
                return None, None, None, status_line(workspace, exc)
        status = f"Done in {time.perf_counter() - started:.1f} s: **{output.name}**"
        is_image = workspace.upload.is_image
        return (None if is_image else shown), (shown if is_image else None), str(output), status

    def on_cancel(request: gr.Request) -> str:
        workspace = workspace_of(request)
        workspace.cancel()
        # This reply and the job's own "Cancelled." can reach the page in either order, so it waits for the job
        # to stop and says the same. A queued job stops when it starts.
        return "Cancelled." if workspace.wait_for_job_end(CANCEL_WAIT_S) else "Cancelling…"

    def on_unload(request: gr.Request) -> None:
        store.release(request.session_hash)

    with gr.Blocks(title="vidsr web demo", delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        gr.Markdown("# vidsr — video super-resolution\n"
                    "Drop a video or an image, preview one frame against bicubic upscaling, then upscale the "
                    f"whole file (audio and subtitles are kept). This server accepts {settings.limits.describe()}.")
        with gr.Row():
            with gr.Column(scale=2):
                # any file: what FFmpeg cannot read is refused by the probe with its reason
                upload = gr.File(label="Video or image", elem_id="upload")
                media_info = gr.Markdown(elem_id="media-info")
                model = gr.Dropdown(model_choices, value=default_model, label="Model",
                                    info="scale · speed class · PSNR on Set5 (×scale bicubic downscaled)")
                precision = gr.Radio(list(handlers.PRECISIONS), value="auto", label="Precision")
                with gr.Accordion("Output quality", open=False):
                    encoder = gr.Dropdown(handlers.available_encoders(), value="libx264", label="Encoder")
                    crf = gr.Slider(0, 63, value=crf_for("libx264"), step=1, label="CRF",
                                    info="lower is better quality and a bigger file")
                at_seconds = gr.Slider(0, 1, value=0, label="Preview frame at (seconds)", visible=False,
                                       elem_id="preview-at")
                with gr.Row():
                    preview_button = gr.Button("Preview frame", elem_id="preview-button")
                    process_button = gr.Button("Upscale", variant="primary", elem_id="process-button")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            with gr.Column(scale=3):
                comparison = gr.ImageSlider(label="Bicubic | vidsr", type="filepath", elem_id="comparison")
                preview_info = gr.Markdown(elem_id="preview-info")
                status = gr.Markdown(elem_id="status")
                result_video = gr.Video(label="Result", interactive=False, elem_id="result-video")
                result_image = gr.Image(label="Result", type="filepath", interactive=False, visible=False,
                                        elem_id="result-image")
                result_file = gr.File(label="Download", interactive=False, elem_id="result-file")

        private = dict(api_visibility="private")
        page = [upload, media_info, at_seconds, comparison, result_video, result_image, result_file, status]
        # upload and clear, not change: the box emptied by a refusal must not fire an event that wipes the reason
        upload.upload(on_upload, [upload], page, concurrency_limit=None, **private)
        upload.clear(on_clear, None, page, queue=False, **private)
        preview_button.click(on_preview, [model, precision, at_seconds], [comparison, preview_info, status],
                             concurrency_id=GPU_QUEUE, **private)
        process_button.click(on_request_job, None, [status], queue=False, **private).then(
            on_process, [model, precision, encoder, crf], [result_video, result_image, result_file, status],
            show_progress_on=[result_video, result_image], concurrency_id=GPU_QUEUE, **private)
        encoder.change(lambda name: gr.Slider(value=crf_for(name)), [encoder], [crf], queue=False, **private)
        cancel_button.click(on_cancel, None, [status], queue=False, **private)
        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return demo


def launch(settings: WebSettings, temp: Path, *, host: str = "127.0.0.1", port: int | None = None,
           auth: tuple[str, str] | None = None, share: bool = False) -> None:
    """Serve the page until SIGTERM or Ctrl-C; `temp` (web.sessions.private_temp_folder) goes with the server."""
    store = SessionStore(temp, idle_timeout_s=settings.idle_timeout_s)
    # Gradio refuses uploaded dotfiles that lie inside the working folder, so a server started in / or in the
    # temp folder could not take ".clip.mp4": it works in the session root, where no upload lands.
    os.chdir(store.root)

    def stop(*_: object) -> None:
        """Exit at once: jobs are cancelled by the exit itself, and Gradio's own shutdown takes 20-35 s."""
        store.close()
        shutil.rmtree(temp, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sweeper = threading.Thread(target=sweep_forever, args=(store, settings.upload_ttl_s), daemon=True,
                               name="vidsr-web-sweep")
    sweeper.start()
    try:
        build_app(settings, store).launch(
            server_name=host, server_port=port, auth=auth, share=share, ssr_mode=False, css=CSS,
            max_file_size=settings.limits.max_upload_bytes, footer_links=["gradio", "settings"])
    finally:
        store.close()
        shutil.rmtree(temp, ignore_errors=True)


def sweep_forever(store: SessionStore, upload_ttl_s: float) -> None:
    """Release idle sessions and delete uploads no page took, also while nobody uses the page."""
    uploads = store.root.parent
    while True:
        time.sleep(SWEEP_INTERVAL_S)
        store.sweep()
        sweep_unused_uploads(uploads, keep=store.root, max_age_s=upload_ttl_s)
