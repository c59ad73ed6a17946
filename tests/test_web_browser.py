"""The web demo end to end in headless Chromium: upload, preview, full job, download, queue, cancel, cleanup.

Needs Debian's `chromium` (/usr/bin/chromium; .ci/run installs it) and the `playwright` Python package (the
`dev` extra); skipped with the reason when either is missing. With VIDSR_UPDATE_SCREENSHOT=1 it saves the
page as docs/img/web.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

import vidsr
from vidsr.sample import ClipSpec, write_clip

CHROMIUM = os.environ.get("VIDSR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
# The README's screenshot is refreshed only on request, so a test run leaves the work tree clean.
SCREENSHOT = REPO / "docs" / "img" / "web.png" if os.environ.get("VIDSR_UPDATE_SCREENSHOT") else None
CLIP = ClipSpec(width=160, height=96, frames=12, audio=True, subtitles=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Server:
    url: str
    temp: Path  # its GRADIO_TEMP_DIR, where the session folders live
    process: subprocess.Popen
    log: Path

    def wait_ready(self) -> str:
        wait_until(lambda: answers(self.url) or self.process.poll() is not None, 90, "the server to answer")
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        return self.url

    def session_folders(self) -> list[Path]:
        return [folder for root in self.temp.glob("vidsr-web-*") for folder in root.iterdir()]


@pytest.fixture
def server(tmp_path: Path):
    """`python -m web` on a free loopback port (CPU models); the test builds its clips while it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "web", "--port", str(port), "--device", "cpu", "--max-duration", "60",
             "--max-resolution", "640x480"],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")})
    try:
        yield Server(f"http://127.0.0.1:{port}/", tmp_path / "gradio", process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, clip: Path):
    """A fresh session (Gradio gives each page load its own) with `clip` uploaded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("#upload input[type=file]").set_input_files(clip)
    return page


def test_upload_preview_upscale_download_in_chromium(server: Server, browser, tmp_path: Path) -> None:
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video\n" * 100)
    refused = open_page(browser, server.wait_ready(), not_media)
    sync_api.expect(refused.get_by_text(re.compile(r"^notes\.mp4: not a readable media file"))).to_be_visible()
    refused.close()

    clip = write_clip(tmp_path / "sample clip.mkv", CLIP)
    page = open_page(browser, server.url, clip)
    sync_api.expect(page.locator("#media-info")).to_contain_text("160x96")
    sync_api.expect(page.locator("#media-info")).to_contain_text("subtitle (srt)")

    page.locator("#preview-button").click()
    sync_api.expect(page.locator("#comparison img")).to_have_count(2)
    sync_api.expect(page.locator("#preview-info")).to_contain_text("160x96 → 320x192")

    page.locator("#process-button").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done in", timeout=90_000)
    with page.expect_download() as download_info:
        page.locator("#result-file a").first.click()
    downloaded = tmp_path / "downloaded.mkv"
    download_info.value.save_as(downloaded)
    page.wait_for_timeout(500)  # let the result video show its first frame
    page.screenshot(path=str(SCREENSHOT or tmp_path / "web.png"), full_page=True)

    outputs = list(server.temp.glob("vidsr-web-*/*/output/*"))
    assert len(outputs) == 1 and outputs[0].read_bytes() == downloaded.read_bytes()
    info = vidsr.probe(downloaded)
    assert (info.video.width, info.video.height) == (320, 192)
    with av.open(str(downloaded)) as container:
        assert sum(1 for _ in container.decode(video=0)) == CLIP.frames
        assert [s.type for s in container.streams] == ["video", "audio", "subtitle"]
        assert container.streams.audio[0].codec_context.name == "aac"

    page.close()  # the unload event removes the session folder
    wait_until(lambda: not server.session_folders(), 30, "the session folder to be removed")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not list(server.temp.glob("vidsr-web-*")), "the server left its session root behind"


def test_second_job_waits_in_the_queue_while_the_first_shows_progress_and_is_cancelled(
        server: Server, browser, tmp_path: Path) -> None:
    long_clip = write_clip(tmp_path / "long.mp4", ClipSpec(width=320, height=180, frames=600,
                                                      options=(("preset", "ultrafast"),)))
    short_clip = write_clip(tmp_path / "short.mkv", CLIP)
    first = open_page(browser, server.wait_ready(), long_clip)
    sync_api.expect(first.locator("#media-info")).to_contain_text("320x180")
    first.locator("#process-button").click()
    live = re.compile(r"\d+/600 frames · [\d.]+ fps · ETA \d+:\d\d")
    sync_api.expect(first.locator("#result-video").get_by_text(live)).to_be_visible()

    second = open_page(browser, server.url, short_clip)
    sync_api.expect(second.locator("#media-info")).to_contain_text("160x96")
    second.locator("#process-button").click()
    sync_api.expect(second.locator("#result-video")).to_contain_text("queue: 1/1")

    first.locator("#cancel-button").click()
    sync_api.expect(first.locator("#status")).to_have_text("Cancelled.", timeout=30_000)
    assert not list(server.temp.glob("vidsr-web-*/*/output/long*")), "cancelled output left behind"
    sync_api.expect(second.locator("#status")).to_contain_text("Done in", timeout=90_000)
