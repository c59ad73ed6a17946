"""Per-session temporary folders: created on first use, removed when the page closes or sits idle.

A folder is never removed under a running job: release() cancels the job and the job's exit removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidsr.errors import InputError

JOB_RUNNING = "a job of this page is still running: wait for it or cancel it first"
UPLOAD_TTL_S = 600.0  # an upload no page has taken within this is deleted (Gradio's own sweep is hourly)


def private_temp_folder() -> Path:
    """A folder of this server's own for Gradio's uploads and caches, inside GRADIO_TEMP_DIR (or the system's
    temp folder), which is pointed at it; call before importing gradio, which reads the variable at import."""
    parent = os.environ.get("GRADIO_TEMP_DIR")
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vidsr-web-", dir=parent))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def sweep_unused_uploads(folder: Path, keep: Path, max_age_s: float = UPLOAD_TTL_S) -> list[Path]:
    """Delete the files under `folder` (Gradio's uploads) older than `max_age_s`, except those under `keep` (the
    session folders), and the folders they leave empty; returns the deleted files."""
    cutoff = time.time() - max_age_s
    removed = []
    for parent, _, files in os.walk(folder, topdown=False):
        here = Path(parent)
        if here == keep or keep in here.parents:
            continue
        for name in files:
            path = here / name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
        with contextlib.suppress(OSError):  # not empty, or gone meanwhile
            if here != folder and here.stat().st_mtime < cutoff:
                here.rmdir()
    return removed


class Workspace:
    """One browser session's folder, its current upload and result, and the cancel flag of its jobs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.upload: Any = None  # the accepted upload (web.handlers.Upload)
        self.result: Path | None = None
        self.cancel_event = threading.Event()
        self.last_used = time.monotonic()
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()
        self._job_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        return self._running > 0

    @property
    def job_running(self) -> bool:
        return self._job_lock.locked()

    @contextmanager
    def job(self) -> Iterator[None]:
        """Held while a job works on the upload, so that nothing replaces it meanwhile."""
        if not self._job_lock.acquire(blocking=False):
            raise InputError(JOB_RUNNING)
        try:
            yield
        finally:
            self._job_lock.release()

    def arm(self) -> None:
        """Called when a job is requested (before it waits in the queue), so Cancel also reaches a waiting job.

        The flag is only renewed when nothing runs: a Cancel stops everything this session has going."""
        with self._lock:
            if not self._running:
                self.cancel_event = threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait_for_job_end(self, timeout_s: float) -> bool:
        """True once no job runs, False if one still does after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.job_running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @contextmanager
    def in_use(self) -> Iterator[Workspace]:
        """Keep the folder alive while a handler works in it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("session closed")
            self._running += 1
        try:
            yield self
        finally:
            with self._lock:
                self._running -= 1
                self.last_used = time.monotonic()
                remove = self._closed and not self._running
            if remove:
                self._remove()

    def close(self) -> None:
        """Cancel what runs and remove the folder now, or when the last running handler leaves."""
        with self._lock:
            self._closed = True
            self.cancel_event.set()
            remove = not self._running
        if remove:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class SessionStore:
    """Workspaces by Gradio session id, under one root folder that is removed on shutdown."""

    def __init__(self, parent: Path | None = None, idle_timeout_s: float = 6 * 3600) -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="vidsr-web-", dir=parent))
        self.idle_timeout_s = idle_timeout_s
        self._workspaces: dict[str, Workspace] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Workspace:
        """The session's workspace, created on first use (idle sessions are swept at the same time)."""
        self.sweep()
        with self._lock:
            workspace = self._workspaces.get(session_id)
            if workspace is None or workspace.closed:
                workspace = Workspace(Path(tempfile.mkdtemp(dir=self.root)))
                self._workspaces[session_id] = workspace
            workspace.last_used = time.monotonic()
            return workspace

    def release(self, session_id: str) -> None:
        with self._lock:
            workspace = self._workspaces.pop(session_id, None)
        if workspace is not None:
            workspace.close()

    def sweep(self) -> list[str]:
        """Release sessions idle for longer than the timeout (a tab that vanished without an unload event)."""
        now = time.monotonic()
        with self._lock:
            idle = [sid for sid, ws in self._workspaces.items()
                    if not ws.running and now - ws.last_used > self.idle_timeout_s]
        for session_id in idle:
            self.release(session_id)
        return idle

    def close(self) -> None:
        with self._lock:
            sessions = list(self._workspaces)
        for session_id in sessions:
            self.release(session_id)
        shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._workspaces)
