"""The Gradio page: layout and event wiring only; what each event does lives in web.handlers."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

import vidsr
from vidsr.errors import Cancelled, VidsrError
from vidsr.media import sink
from vidsr.zoo import DEFAULT_MODEL, model_files
from web import handlers
from web.handlers import JobOptions
from web.limits import Limits
from web.sessions import SessionStore, Workspace

CANCEL_WAIT_S = 10.0  # a job stops between batches, well within this
GPU_QUEUE = "gpu"  # preview and full jobs share it: one model run per GPU at a time
CSS = "#status:empty, #preview-info:empty {display: none}"


@dataclass(frozen=True)
class WebSettings:
    limits: Limits = field(default_factory=Limits)
    device: str = "auto"
    concurrency: int = 1
    queue_size: int = 20
    idle_timeout_s: float = 6 * 3600
    models_dir: Path | None = None  # the operator's weight files, offered beside the bundled models


def crf_for(encoder: str) -> int:
    return sink.DEFAULT_CRF.get(encoder, 23)


@contextmanager
def user_errors(workspace: Workspace) -> Iterator[None]:
    """Show vidsr's one-line errors in the page, without the server's folder names."""
    try:
        yield
    except VidsrError as exc:
        message = re.sub(re.escape(f"{workspace.directory}/") + r"(?:[^/\s]+/)*", "", str(exc))  # keep the name
        raise gr.Error(message, print_exception=False) from None


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

    def on_upload(path: str | None, request: gr.Request):
        workspace = workspace_of(request)
        with workspace.in_use(), user_errors(workspace):
            if path is None:
                handlers.forget_upload(workspace)
                return "", gr.Slider(visible=False), None, None, None, ""
            upload = handlers.accept_upload(workspace, Path(path), settings.limits)
        video = upload.info.video
        seek = gr.Slider(minimum=0, maximum=round(video.duration or 0, 2), value=0, visible=not upload.is_image,
                         step=round(1 / float(video.frame_rate), 4) if video.frame_rate else 0.04)
        return upload.summary(), seek, None, None, None, ""

    def on_preview(model: str, precision: str, at_seconds: float, request: gr.Request):
        workspace = workspace_of(request)
        with workspace.in_use(), user_errors(workspace):
            preview = handlers.make_preview(handlers.current_upload(workspace), at_seconds, options(model, precision))
            bicubic, upscaled = handlers.save_preview(workspace, preview)
        height, width = preview.original.shape[:2]
        info = (f"Frame at {preview.at_seconds:.2f} s: {width}x{height} → "
                f"{preview.upscaled.shape[1]}x{preview.upscaled.shape[0]} · left bicubic, right {model} "
                f"({preview.model_seconds:.2f} s)")
        return (str(bicubic), str(upscaled)), info

    def on_request_job(request: gr.Request) -> str:
        workspace_of(request).arm()
        return ""  # the result video shows the queue position, then the progress

    def on_process(model: str, precision: str, encoder: str, crf: float, request: gr.Request,
                   progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio injects it by this default
        workspace = workspace_of(request)

        def report(update: vidsr.Progress) -> None:
            progress((update.frames, handlers.known_total(update)), desc=handlers.describe_progress(update),
                     unit="frames")

        started = time.perf_counter()
        with workspace.in_use(), user_errors(workspace):
            try:
                output = handlers.process(workspace, options(model, precision, encoder, crf), report)
            except Cancelled:
                return None, None, "Cancelled."
        status = f"Done in {time.perf_counter() - started:.1f} s: **{output.name}**"
        return (None if workspace.upload.is_image else str(output)), str(output), status

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
                result_file = gr.File(label="Download", interactive=False, elem_id="result-file")

        private = dict(api_visibility="private")
        upload.change(on_upload, [upload], [media_info, at_seconds, comparison, result_video, result_file,
                                             status], concurrency_limit=None, **private)
        preview_button.click(on_preview, [model, precision, at_seconds], [comparison, preview_info],
                             concurrency_id=GPU_QUEUE, **private)
        process_button.click(on_request_job, None, [status], queue=False, **private).then(
            on_process, [model, precision, encoder, crf], [result_video, result_file, status],
            show_progress_on=[result_video], concurrency_id=GPU_QUEUE, **private)
        encoder.change(lambda name: gr.Slider(value=crf_for(name)), [encoder], [crf], queue=False, **private)
        cancel_button.click(on_cancel, None, [status], queue=False, **private)
        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return demo


def launch(settings: WebSettings, *, host: str = "127.0.0.1", port: int | None = None,
           auth: tuple[str, str] | None = None, share: bool = False) -> None:
    """Serve the page until interrupted; every session folder is removed on the way out."""
    store = SessionStore(Path(gr.utils.get_upload_folder()), idle_timeout_s=settings.idle_timeout_s)
    # SIGTERM unwinds like Ctrl-C, so the folders go with the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        build_app(settings, store).launch(
            server_name=host, server_port=port, auth=auth, share=share, ssr_mode=False, css=CSS,
            max_file_size=settings.limits.max_upload_bytes, footer_links=["gradio", "settings"])
    finally:
        store.close()
