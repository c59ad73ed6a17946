"""The web demo end to end in headless Chromium: upload, preview, full job, download, pictures, refusals, queue,
cancel, and the server's exit.

The browser tests need Debian's `chromium` (/usr/bin/chromium; .ci/run installs it) and the `playwright` Python
package (the `dev` extra) and are skipped with the reason when either is missing; the exit test needs neither.
With VIDSR_UPDATE_SCREENSHOT=1 it saves the page as docs/img/web.png.

Nothing here may hang CI: Chromium and the server run in process groups of their own that are SIGKILLed in the
fixtures' finally blocks, Chromium with a fresh profile and no background networking, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import vidsr
from vidsr.tools.sample import ClipSpec, pattern_frame, write_clip

CHROMIUM = os.environ.get("VIDSR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
REPO = Path(__file__).resolve().parents[1]
# The README's screenshot is refreshed only on request, so a test run leaves the work tree clean.
SCREENSHOT = REPO / "docs" / "img" / "web.png" if os.environ.get("VIDSR_UPDATE_SCREENSHOT") else None
CLIP = ClipSpec(width=160, height=96, frames=12, audio=True, subtitles=True)
START_S = 90  # the server imports torch and gradio; on a loaded 2-core machine that can take a minute
EXIT_S = 3  # SIGTERM: the server exits at once (Gradio's own shutdown took 5-35 s)
TEST_S = 150  # a browser test takes 2-15 s, and its server's start up to START_S of that

try:
    from playwright import sync_api
except ImportError:  # the browser tests skip; the server's own test still runs
    sync_api = None

# A backstop past the deadline below: the thread method ends the whole run with every thread's stack.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(TEST_S + 60, method="thread")]


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


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (it leads its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the kernel: leave it rather than hang the run
        process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    temp: Path  # its GRADIO_TEMP_DIR, under which it makes its private folder
    process: subprocess.Popen
    log: Path

    def wait_ready(self) -> str:
        wait_until(lambda: answers(self.url) or self.process.poll() is not None, START_S, "the server to answer")
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        return self.url

    def private_folders(self) -> list[Path]:
        return list(self.temp.glob("vidsr-web-*"))

    def session_folders(self) -> list[Path]:
        return [folder for root in self.temp.glob("vidsr-web-*/vidsr-web-*") for folder in root.iterdir()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`python -m web` on a free loopback port (CPU models), started in the folder that holds its temp folder:
    the case where Gradio refused uploaded dotfiles."""
    home = tmp_path_factory.mktemp("web")
    port, log = free_port(), home / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(home / "gradio"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "web", "--port", str(port), "--device", "cpu", "--max-duration", "60",
             "--max-resolution", "640x480"],
            cwd=home, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    try:
        yield Server(f"http://127.0.0.1:{port}/", home / "gradio", process, log)
    finally:
        kill_group(process)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium with a fresh profile: (its process, its DevTools port)."""
    if sync_api is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen([CHROMIUM, *CHROMIUM_ARGS, f"--user-data-dir={profile}", "about:blank"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip() or process.poll() is not None,
                   30, "Chromium's DevTools port")
        assert process.poll() is None, "Chromium exited at start"
        yield process, port_file.read_text().split()[0]
    finally:
        kill_group(process)


@pytest.fixture(scope="module")
def browser(chromium):
    """The Chromium of `chromium`, driven over its DevTools port (Playwright only connects)."""
    process, port = chromium
    with sync_api.sync_playwright() as playwright:
        yield playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", timeout=30_000)
        kill_group(process)  # before Playwright's own shutdown, which would wait for the browser


@pytest.fixture(autouse=True)
def chromium_deadline(request: pytest.FixtureRequest):
    """Kill Chromium when a browser test runs past TEST_S: Playwright's calls then fail at once. Its renderers
    once spun at full CPU on a loaded machine and held a test run for 20 minutes; pytest-timeout's signal did
    not get through Playwright's event loop."""
    if "browser" not in request.fixturenames:
        yield
        return
    process, _ = request.getfixturevalue("chromium")
    timer = threading.Timer(TEST_S, kill_group, (process,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def open_page(browser, url: str, upload: Path | dict | None = None):
    """A fresh session (Gradio gives each page load its own), with `upload` dropped into the upload box."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    if upload is not None:
        page.locator("#upload input[type=file]").set_input_files(upload)
    return page


def status_of(page) -> str:
    return page.locator("#status").inner_text(timeout=10_000)


def test_upload_preview_upscale_download_in_chromium(server: Server, browser, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "sample clip.mkv", CLIP)
    page = open_page(browser, server.wait_ready(), clip)
    sync_api.expect(page.locator("#media-info")).to_contain_text("160x96")
    sync_api.expect(page.locator("#media-info")).to_contain_text("subtitle (subrip)")

    page.locator("#preview-button").click()
    sync_api.expect(page.locator("#comparison img")).to_have_count(2)
    sync_api.expect(page.locator("#preview-info")).to_contain_text("160x96 → 320x192")

    page.locator("#process-button").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done in", timeout=90_000)
    # the player shows an MP4 remux, in place of a re-encode by Gradio; the download is the MKV
    sync_api.expect(page.locator("#result-video video")).to_have_attribute("src", re.compile(r"sample_clip.*\.mp4"))
    with page.expect_download() as download_info:
        page.locator("#result-file a").first.click()
    downloaded = tmp_path / "downloaded.mkv"
    download_info.value.save_as(downloaded)
    page.wait_for_timeout(500)  # let the result video show its first frame
    page.screenshot(path=str(SCREENSHOT or tmp_path / "web.png"), full_page=True)

    outputs = list(server.temp.glob("vidsr-web-*/vidsr-web-*/*/output/*"))
    assert len(outputs) == 1 and outputs[0].read_bytes() == downloaded.read_bytes()
    assert (info := vidsr.probe(downloaded)).video.width == 320 and info.video.height == 192
    with av.open(str(downloaded)) as container:
        assert sum(1 for _ in container.decode(video=0)) == CLIP.frames
        assert [s.type for s in container.streams] == ["video", "audio", "subtitle"]

    page.close()  # the unload event removes the session folder
    wait_until(lambda: not server.session_folders(), 30, "the session folder to be removed")


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_picture_gives_a_picture(server: Server, browser, tmp_path: Path, name: str) -> None:
    picture = tmp_path / name
    Image.fromarray((pattern_frame(120, 80, 0) * 255).astype(np.uint8)).save(picture)
    page = open_page(browser, server.wait_ready(), picture)
    sync_api.expect(page.locator("#media-info")).to_contain_text("image · 120x80")
    sync_api.expect(page.locator("#preview-at")).to_be_hidden()  # no time to choose in a picture
    page.locator("#process-button").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done in", timeout=60_000)
    sync_api.expect(page.locator("#result-image img")).to_be_visible()
    sync_api.expect(page.locator("#result-video")).to_be_hidden()
    assert page.locator("text=Error").count() == 0
    with page.expect_download() as download_info:
        page.locator("#result-file a").first.click()
    result = tmp_path / "result.png"
    download_info.value.save_as(result)
    assert Image.open(result).size == (240, 160)
    page.close()


def test_refusals_are_one_status_line_and_empty_the_box(server: Server, browser, tmp_path: Path) -> None:
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video\n" * 100)
    page = open_page(browser, server.wait_ready(), not_media)
    sync_api.expect(page.locator("#status")).to_contain_text("notes.mp4: not a readable media file")
    assert len(status_of(page).splitlines()) == 1
    assert page.locator("text=Error").count() == 0  # no badges over the panels
    sync_api.expect(page.locator("#upload input[type=file]")).to_have_count(1)  # the box is empty again
    sync_api.expect(page.locator("#process-button")).to_be_enabled()
    page.close()

    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(width=64, height=48, frames=4))
    for name in (".hidden.mp4", "..\\..\\x.mp4"):
        page = open_page(browser, server.url, {"name": name, "mimeType": "video/mp4", "buffer": clip.read_bytes()})
        sync_api.expect(page.locator("#media-info")).to_contain_text("video · 64x48")
        assert page.locator("text=Error").count() == 0
        page.close()


def test_second_job_waits_in_the_queue_while_the_first_shows_progress_and_is_cancelled(
        server: Server, browser, tmp_path: Path) -> None:
    long_clip = write_clip(tmp_path / "long.mp4", ClipSpec(width=320, height=180, frames=600,
                                                          options=(("preset", "ultrafast"),)))
    short_clip = write_clip(tmp_path / "short.mp4", ClipSpec(width=64, height=48, frames=4))
    first = open_page(browser, server.wait_ready(), long_clip)
    sync_api.expect(first.locator("#media-info")).to_contain_text("320x180")
    first.locator("#process-button").click()
    live = re.compile(r"\d+/600 frames · [\d.]+ fps · ETA \d+:\d\d")
    sync_api.expect(first.locator("#result-video").get_by_text(live)).to_be_visible()

    second = open_page(browser, server.url, short_clip)
    sync_api.expect(second.locator("#media-info")).to_contain_text("64x48")
    second.locator("#process-button").click()
    sync_api.expect(second.locator("#result-video")).to_contain_text("queue: 1/1")

    first.locator("#cancel-button").click()
    sync_api.expect(first.locator("#status")).to_have_text("Cancelled.", timeout=30_000)
    assert not list(server.temp.glob("vidsr-web-*/vidsr-web-*/*/output/long*")), "cancelled output left behind"
    sync_api.expect(second.locator("#status")).to_contain_text("Done in", timeout=90_000)
    first.close()
    second.close()


def upload_without_a_page(url: str, name: str, data: bytes) -> None:
    """POST a file to Gradio's upload route, as a tab closed mid-way would leave it: taken by no session."""
    boundary = "vidsrtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_sigterm_exits_at_once_and_leaves_nothing(server: Server) -> None:
    upload_without_a_page(server.wait_ready(), "orphan.mp4", b"x" * 100_000)
    assert len(server.private_folders()) == 1 and list(server.temp.rglob("orphan.mp4"))
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(EXIT_S + 10) == 0
    assert time.monotonic() - started < EXIT_S
    assert list(server.temp.iterdir()) == [], "the server left files in its temp folder"
