"""The work folder of a chunked job: `.NAME.vidsr/` beside the output, holding finished chunks and a manifest.

The manifest names what the chunks were made from (input fingerprint, settings, model identity) and the
chunk table (pts range, state, SHA-256, frame count). A chunk file is written under a temporary name, renamed
into place, and only then marked done in the manifest (itself replaced atomically), so nothing half-written
is ever taken for a finished chunk. A lock keeps a second process off the same output.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidsr.errors import OutputError
from vidsr.media.chunks import Chunk

log = logging.getLogger("vidsr")

MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
_ENDS_BYTES = 1 << 20  # the input is fingerprinted by its size, time of change and the hash of its ends


def work_folder_of(output: Path) -> Path:
    return output.with_name(f".{output.name}.vidsr")


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and a hash of both ends: cheap for any length, and changes when the file is
    replaced, re-cut or changed in place (the time: a tool that patches the middle keeps size and ends)."""
    stat = path.stat()
    size = stat.st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_ENDS_BYTES))
        f.seek(max(0, size - _ENDS_BYTES))
        digest.update(f.read(_ENDS_BYTES))
    return {"size": size, "mtime_ns": stat.st_mtime_ns, "ends_sha256": digest.hexdigest()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class WorkFolder:
    """Finished chunks of one output, kept across runs while `identity` (what made them) stays the same."""

    def __init__(self, output: Path, identity: dict[str, Any], chunks: list[Chunk], resume: bool = True) -> None:
        self.path = work_folder_of(output)
        self.output = output
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the work folder ({exc.strerror.lower()})") from None
        self._lock = _lock(self.path, output)
        table = [{"index": c.index, "start": c.start, "end": c.end, "state": "pending"} for c in chunks]
        self.manifest = {"version": _FORMAT_VERSION, "identity": identity, "chunks": table}
        self._resume(resume)

    def _resume(self, resume: bool) -> None:
        old = self._read_manifest()
        if not old:  # none, or unreadable (said so)
            pass
        elif not resume:
            log.warning("%s: --no-resume: starting afresh", self.output.name)
        elif old.get("identity") != self.manifest["identity"]:
            log.warning("%s: the work folder %s was made from another input or other settings; starting afresh",
                        self.output.name, self.path.name)
        elif _ranges(old["chunks"]) != _ranges(self.manifest["chunks"]):
            log.warning("%s: the chunk plan changed; starting afresh", self.output.name)
        else:
            self.manifest["chunks"] = [self._verified(entry) for entry in old["chunks"]]
            done = len(self.done())
            if done:
                log.warning("%s: resuming: %d of %d chunks already done", self.output.name, done,
                            len(self.manifest["chunks"]))
        self.clear_stale()
        self._save()

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
            data = None
        if _valid_manifest(data):
            return data
        log.warning("%s: unreadable or foreign manifest in %s; starting afresh", self.output.name, self.path.name)
        return {}

    def _verified(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A done chunk stays done only if its file is there with the recorded checksum."""
        if entry.get("state") != "done":
            return {**entry, "state": "pending"}
        path = self.chunk_path(entry["index"])
        if path.is_file() and file_sha256(path) == entry.get("sha256"):
            return entry
        log.warning("%s: chunk %d is missing or damaged; redoing it", self.output.name, entry["index"])
        return {**entry, "state": "pending"}

    def chunk_path(self, index: int) -> Path:
        return self.path / f"chunk-{index:05d}.nut"

    def done(self) -> list[int]:
        return [e["index"] for e in self.manifest["chunks"] if e["state"] == "done"]

    def pending(self) -> list[int]:
        return [e["index"] for e in self.manifest["chunks"] if e["state"] != "done"]

    def frames(self, index: int | None = None) -> int:
        """The frames of the done chunks, or of chunk `index`."""
        return sum(e.get("frames", 0) for e in self.manifest["chunks"]
                   if e["state"] == "done" and index in (None, e["index"]))

    def partial_path(self, index: int) -> Path:
        return self.path / f".chunk-{index:05d}.partial-{os.getpid()}.nut"

    def lost(self) -> list[dict[str, list]]:
        """The frames each done chunk lost (`LostFrames.spans`)."""
        return [e.get("lost", {}) for e in self.manifest["chunks"] if e["state"] == "done"]

    def finish(self, index: int, written: Path, frames: int, lost: dict[str, list]) -> None:
        """Move the chunk file `written` into place, then record it as done, with what it lost."""
        path = self.chunk_path(index)
        os.replace(written, path)
        entry = self.manifest["chunks"][index]
        entry.update(state="done", sha256=file_sha256(path), frames=frames, lost=lost)
        self._save()

    def _save(self) -> None:
        tmp = self.path / f".{MANIFEST}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(self.manifest, indent=1))
            os.replace(tmp, self.path / MANIFEST)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the manifest ({exc.strerror.lower()})") from None

    def remove(self) -> None:
        """After success: the chunks are in the output."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def clear_stale(self) -> None:
        """Chunk files not recorded as done (a killed run's, or another input's) are removed."""
        keep = {self.chunk_path(i).name for i in self.done()} | {MANIFEST, "lock"}
        for path in self.path.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)


def _lock(folder: Path, output: Path) -> int:
    """Hold the work folder's lock (the kernel releases it if we die); refused while another process does."""
    try:
        lock = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the work folder ({exc.strerror.lower()})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise OutputError(f"{output}: another vidsr process is writing it (work folder {folder})") from None
    return lock


@contextlib.contextmanager
def unchunked_run(output: Path) -> Iterator[None]:
    """Around a run in one piece: refused while a chunked run holds `output`'s work folder; an earlier chunked
    run's leftovers (its folder, resumable until now) are removed once the output is complete."""
    folder = work_folder_of(output)
    if not folder.is_dir():
        yield
        return
    lock = _lock(folder, output)
    try:
        yield
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("%s: removed %s, the finished chunks of an earlier chunked run of it", output.name, folder.name)
    finally:
        os.close(lock)


def _ranges(table: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(e.get("start"), e.get("end")) for e in table]


def _valid_manifest(data: Any) -> bool:
    """A manifest as `WorkFolder` writes it. Anything else (edited by hand, another program's, another
    version's) is foreign: its chunks are not trusted, the run starts afresh instead of failing on it."""
    if not (isinstance(data, dict) and data.get("version") == _FORMAT_VERSION and "identity" in data
            and isinstance(data.get("chunks"), list)):
        return False
    return all(_valid_entry(position, entry) for position, entry in enumerate(data["chunks"]))


def _valid_entry(position: int, entry: Any) -> bool:
    """A chunk table row: its index is its place in the table (chunk files are named by it)."""
    return (isinstance(entry, dict) and _is_int(entry.get("index")) and entry["index"] == position
            and all(entry.get(key) is None or _is_int(entry[key]) for key in ("start", "end"))
            and (entry.get("state") == "pending" or (entry.get("state") == "done" and _valid_done(entry))))


def _valid_done(entry: dict[str, Any]) -> bool:
    """A finished chunk's record, as `WorkFolder.finish` writes it; the join reads its frames and losses."""
    lost = entry.get("lost")
    return (isinstance(entry.get("sha256"), str) and _is_int(entry.get("frames")) and entry["frames"] >= 0
            and isinstance(lost, dict)
            and all(isinstance(spans, list) and all(map(_valid_span, spans)) for spans in lost.values()))


def _valid_span(span: Any) -> bool:
    """(start, end, count), as `LostFrames.merge` reads it."""
    return (isinstance(span, list) and len(span) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in span))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
