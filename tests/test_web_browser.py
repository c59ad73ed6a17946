"""The web demo end to end in headless Chromium: upload, preview, full job, download, cleanup.

Needs Debian's `chromium` (/usr/bin/chromium; .ci/run installs it) and the `playwright` Python package (the
`dev` extra); skipped with the reason when either is missing. Saves the page as docs/img/web.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest

import vidsr
from vidsr.sample import ClipSpec, write_clip

CHROMIUM = os.environ.get("VIDSR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "img" / "web.png"
CLIP = ClipSpec(width=160, height=96, frames=12, audio=True, subtitles=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture
def server(tmp_path: Path):
    """`python -m web` on a free loopback port, with its own Gradio temp folder so cleanup can be checked."""
    port, temp = free_port(), tmp_path / "gradio"
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "--port", str(port), "--max-duration", "60", "--max-resolution", "640x480"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_TEMP_DIR": str(temp)})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: answers(url) or process.poll() is not None, 90, "the server to answer")
        assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        yield url, temp, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        log.close()


def session_folders(temp: Path) -> list[Path]:
    return [folder for root in temp.glob("vidsr-web-*") for folder in root.iterdir()]


def test_upload_preview_upscale_download_in_chromium(server, tmp_path: Path) -> None:
    url, temp, process = server
    clip = write_clip(tmp_path / "sample clip.mkv", CLIP)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.set_default_timeout(60_000)
        page.goto(url)

        page.locator("#upload input[type=file]").set_input_files(clip)
        sync_api.expect(page.locator("#media-info")).to_contain_text("160x96")
        sync_api.expect(page.locator("#media-info")).to_contain_text("subtitle (srt)")

        page.locator("#preview-button").click()
        sync_api.expect(page.locator("#comparison img")).to_have_count(2)
        sync_api.expect(page.locator("#preview-info")).to_contain_text("160x96 → 320x192")

        page.locator("#process-button").click()
        sync_api.expect(page.locator("#status")).to_contain_text("Done in", timeout=90_000)
        link = page.locator("#result-file a").first
        with page.expect_download() as download_info:
            link.click()
        downloaded = tmp_path / "downloaded.mkv"
        download_info.value.save_as(downloaded)
        page.wait_for_timeout(500)  # let the result video show its first frame
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        outputs = list(temp.glob("vidsr-web-*/*/output/*"))
        assert len(outputs) == 1 and outputs[0].read_bytes() == downloaded.read_bytes()
        info = vidsr.probe(downloaded)
        assert (info.video.width, info.video.height) == (320, 192)
        with av.open(str(downloaded)) as container:
            assert sum(1 for _ in container.decode(video=0)) == CLIP.frames
            assert [s.type for s in container.streams] == ["video", "audio", "subtitle"]
            assert container.streams.audio[0].codec_context.name == "aac"

        page.close()  # the unload event removes the session folder
        wait_until(lambda: not session_folders(temp), 30, "the session folder to be removed")
        browser.close()

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not list(temp.glob("vidsr-web-*")), "the server left its session root behind"
