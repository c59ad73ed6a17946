"""Chunked jobs on Ray: workers are actors that load the model once, chunks of every file are spread over them.

The driver plans each file's chunks (`ChunkedJob`), demuxes a chunk's video packets into a small NUT file and
ships it through the object store (or, with `shared_path`, workers read the input themselves); a worker
upscales and encodes the chunk and returns the encoded chunk, which the driver stores in the work folder.
When all of a file's chunks are in, the driver joins them while the workers go on with other files' chunks.
A worker that dies (killed, lost node, out of memory) is replaced and its chunk retried, up to `ATTEMPTS`
times; the driver dying leaves resumable work folders. In a folder run a file that fails is reported and the
others go on, as they do without Ray. The cluster itself is reached through `vidsr.jobs.cluster`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vidsr.compute.upscaler import BatchSize, Upscaler
from vidsr.errors import POSITIVE_WHOLE, Cancelled, InputError, VidsrError
from vidsr.jobs import GPUS_PER_WORKER
from vidsr.jobs.cluster import connect
from vidsr.media.chunks import Chunk, chunk_packets, resolve_chunk_seconds
from vidsr.media.holds import ReuseHeld, held_frames_note, reuse_threshold
from vidsr.media.info import MediaInfo
from vidsr.media.pipeline import ChunkedJob, Progress, plan_output, probe_input, upscale_chunk
from vidsr.media.sink import EncodeSettings

log = logging.getLogger("vidsr")

ATTEMPTS = 3  # runs of one chunk, each on a fresh worker, before the job gives up on it
_POLL = 0.5  # seconds between checks for cancellation while waiting on workers


def check_scale_out(workers: int | None, gpus_per_worker: float) -> None:
    """The numbers of `--workers` and `--gpus-per-worker`, before Ray starts."""
    if workers is not None:
        POSITIVE_WHOLE.check("workers", workers)
    GPUS_PER_WORKER.check("gpus_per_worker", gpus_per_worker)


class ChunkWorker:
    """A Ray actor (see `_actor_class`): one model, loaded once, for every chunk it is given."""

    def __init__(self, descriptor: Any, options: dict[str, Any], batch_size: BatchSize) -> None:
        self.upscaler = Upscaler(descriptor, **options)
        self.batch_size = batch_size

    def run(self, info: MediaInfo, chunk: Chunk, settings: EncodeSettings, chunk_headers: bool, skip_errors: bool,
            data: bytes | None, reuse: float | None = None) -> tuple[bytes, int, dict[str, list], int, str]:
        """The encoded chunk file's bytes, its frame count, the frames it lost, how many held frames reused the
        output before them, and where it ran; `data` None reads the input file itself; `reuse` the held-frame
        threshold."""
        last = Progress(0, None, 0.0)

        def keep(progress: Progress) -> None:
            nonlocal last
            last = progress

        with tempfile.TemporaryDirectory(prefix="vidsr-chunk-") as folder:
            target = Path(folder) / "chunk.nut"
            frames, lost = upscale_chunk(info, chunk, target, self.upscaler, settings, self.batch_size,
                                         chunk_headers, data=data, skip_errors=skip_errors, progress=keep,
                                         reuse=reuse)
            return target.read_bytes(), frames, lost, last.reused, f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass
class _Task:
    job: ChunkedJob
    chunk: Chunk
    attempts: int = 0

    @property
    def name(self) -> str:
        start = 0.0 if self.chunk.start is None else float(self.chunk.start * self.job.info.video.time_base)
        return f"{self.job.info.path.name} chunk {self.chunk.index} (from {start:.1f} s)"


class RayRunner:
    """Runs the pending chunks of several jobs on `workers` actors; joins each job as soon as it is complete."""

    def __init__(self, ray: Any, upscaler: Upscaler, workers: int, gpus_per_worker: float, options: dict[str, Any],
                 batch_size: BatchSize, shared_path: bool = False) -> None:
        self.ray, self.workers, self.shared_path = ray, workers, shared_path
        # Workers get the weights through the object store (no shared filesystem needed), on the CPU in fp32.
        model = copy.deepcopy(upscaler.descriptor.model).to("cpu").float()
        descriptor = self.ray.put(dataclasses.replace(upscaler.descriptor, model=model))
        has_gpu = self.ray.cluster_resources().get("GPU", 0) > 0
        gpus = gpus_per_worker if has_gpu else 0
        options = {**options, "device": "cuda" if gpus else "cpu"}
        actor = self.ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(ChunkWorker)
        self._new_worker: Callable[[], Any] = lambda: actor.remote(descriptor, options, batch_size)

    def run(self, jobs: list[ChunkedJob], progress: bool, cancel: threading.Event | None = None,
            failed: list[str] | None = None) -> list[Path]:
        """The outputs written. A job that fails (a chunk's error, its chunk's workers dying `ATTEMPTS` times, its
        join) ends the run; with `failed`, it is reported, its file's name added there, and the others go on."""
        self.failed, self.given_up = failed, set()
        tasks = deque(_Task(job, chunk) for job in jobs for chunk in job.pending())
        bar = _ProgressBar(jobs, progress)
        idle: list[Any] = []
        running: dict[Any, tuple[Any, _Task]] = {}
        try:
            for job in jobs:
                if not job.pending():
                    self._join(job, tasks)
            idle = [self._new_worker() for _ in range(min(self.workers, len(tasks)))]
            with contextlib.redirect_stdout(_RayMessages()):
                while tasks or running:
                    while tasks and idle:
                        worker, task = idle.pop(), tasks.popleft()
                        running[self._submit(worker, task)] = (worker, task)
                    ready, _ = self.ray.wait(list(running), num_returns=1, timeout=_POLL)
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled; finished chunks are kept for the next run")
                    for ref in ready:
                        worker, task = running.pop(ref)
                        if task.job in self.given_up or self._settle(ref, task, bar, tasks):
                            idle.append(worker)  # (a given-up file's chunk: its result is not wanted)
                        else:  # it died, or a file failed on it: a fresh one, in case it is gone
                            self.ray.kill(worker)
                            idle.append(self._new_worker())
        finally:
            bar.close()
            for worker in idle + [worker for worker, _ in running.values()]:  # their CPUs and GPUs are free again
                self.ray.kill(worker)
            for job in jobs:
                job.work.close()
        return [job.output for job in jobs if job not in self.given_up]

    def _settle(self, ref: Any, task: _Task, bar: _ProgressBar, tasks: deque[_Task]) -> bool:
        """What came back for `task`: its chunk stored (True), its worker dead (False: the task queued again),
        or its file failed (False: given up)."""
        try:
            if self._collect(ref, task, bar):
                if not task.job.pending():
                    self._join(task.job, tasks)
                return True
            tasks.appendleft(task)
        except Cancelled:
            raise
        except VidsrError as exc:
            self._give_up(task.job, exc, tasks)
        return False

    def _join(self, job: ChunkedJob, tasks: deque[_Task]) -> None:
        try:
            job.join()
        except Cancelled:
            raise
        except VidsrError as exc:
            self._give_up(job, exc, tasks)

    def _give_up(self, job: ChunkedJob, exc: VidsrError, tasks: deque[_Task]) -> None:
        """Without a `failed` list, `exc` ends the run. With one, the file is reported and left: its other
        chunks are dropped, and its work folder kept only where it holds finished chunks."""
        if self.failed is None:
            raise exc from None
        log.error("error: %s", exc)
        self.failed.append(job.info.path.name)
        self.given_up.add(job)
        remaining = [task for task in tasks if task.job is not job]
        tasks.clear()
        tasks.extend(remaining)
        job.work.close() if job.work.done() else job.work.remove()

    def _submit(self, worker: Any, task: _Task) -> Any:
        job, chunk = task.job, task.chunk
        task.attempts += 1
        data = None if self.shared_path else self.ray.put(chunk_packets(job.info.path, chunk))
        return worker.run.remote(job.info, chunk, job.settings, job.chunk_headers, job.skip_errors, data, job.reuse)

    def _collect(self, ref: Any, task: _Task, bar: _ProgressBar) -> bool:
        """Store a finished chunk (and join its job when that was the last); False when the worker died."""
        exceptions = self.ray.exceptions
        try:
            data, frames, lost, reused, where = self.ray.get(ref)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError,
                exceptions.OutOfMemoryError, exceptions.NodeDiedError, exceptions.RaySystemError) as exc:
            if task.attempts >= ATTEMPTS:
                raise VidsrError(f"{task.name} failed on {ATTEMPTS} workers; the last one died "
                                 f"({type(exc).__name__}); finished chunks are kept for the next run") from None
            log.warning("%s: the worker died (%s); retrying on a new worker", task.name, type(exc).__name__)
            return False
        except exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, VidsrError) else VidsrError(f"{task.name}: {exc.cause}")
            raise cause from None
        log.info("%s: %d frames done on worker %s", task.name, frames, where)
        task.job.store(task.chunk, data, frames, lost)
        bar.update(frames, reused)
        return True


class _RayMessages(io.TextIOBase):
    """Stdout while workers run. Ray's driver prints what its cluster reports there (a worker that died: a
    paragraph with colour codes), beside the output paths a caller reads; vidsr says such things itself
    (retrying on a new worker), so they go to the debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("ray: %s", text.strip())
        return len(text)


class _ProgressBar:
    """Frames done over all workers, their rate and the ETA."""

    def __init__(self, jobs: list[ChunkedJob], show: bool) -> None:
        totals = [job.total_frames for job in jobs]
        total = None if None in totals else sum(totals)
        self.bar = tqdm(total=total, initial=sum(job.work.frames() for job in jobs), unit="frame",
                        desc=f"{len(jobs)} file(s)", dynamic_ncols=True, disable=not show)
        self.reused = 0  # held frames that reused the output before them, over the chunks done in this run
        self.notices = contextlib.ExitStack()
        if show:
            self.notices.enter_context(logging_redirect_tqdm())  # notices print above the bar, not into its line

    def update(self, frames: int, reused: int = 0) -> None:
        if self.bar.total is not None and self.bar.n + frames > self.bar.total:
            self.bar.total = None
        self.reused += reused
        if self.reused:
            self.bar.set_postfix_str(held_frames_note(self.reused), refresh=False)
        self.bar.update(frames)

    def close(self) -> None:
        self.bar.close()
        self.notices.close()


def upscale_files(pairs: list[tuple[Path, Path | None]], upscaler: Upscaler, *, workers: int | None = None,
                  cluster: str | None = None, cluster_token: str | None = None, gpus_per_worker: float = 1.0,
                  shared_path: bool = False, failed: list[str] | None = None,
                  chunk_seconds: float | None = None, resume: bool = True, batch_size: BatchSize = None,
                  progress: bool = False, cancel: threading.Event | None = None, skip_errors: bool = False,
                  upscaler_options: dict[str, Any] | None = None, hwdec: str | None = None,
                  reuse_held: ReuseHeld = True, **encode: Any) -> list[Path]:
    """Upscale (input, output) pairs of videos on Ray workers, all files' chunks at once; returns the outputs.

    `chunk_seconds` and `reuse_held` as for `upscale_video` (a file not cut into chunks is one chunk); `encode` holds
    `plan_output`'s encoder options. `upscaler_options` (precision, tile, tile_pad, compile) go to the
    workers' models; each worker takes `gpus_per_worker` GPUs where the cluster has GPUs. `cluster` and
    `cluster_token` as for `vidsr.jobs.cluster.connect`. The first file that fails ends the run; with a `failed`
    list, a file that fails is reported and named there, and the others go on.
    """
    check_scale_out(workers, gpus_per_worker)
    if hwdec:
        log.warning("--hwdec: Ray workers decode in software")
    jobs: list[ChunkedJob] = []
    try:
        reuse = reuse_threshold(reuse_held)
        for source, target in pairs:
            try:
                jobs.append(_plan(source, target, upscaler, chunk_seconds, resume, skip_errors, encode, reuse))
            except VidsrError as exc:
                if failed is None:
                    raise
                log.error("error: %s", exc)
                failed.append(source.name)
        if not jobs:
            return []
        ray = connect(cluster, cluster_token)
        runner = RayRunner(ray, upscaler, worker_count(ray, workers, gpus_per_worker), gpus_per_worker,
                           upscaler_options or {}, batch_size, shared_path)
    except BaseException:  # no chunk ran: unlock the work folders planned so far, and remove those holding none
        for job in jobs:
            job.work.close() if job.work.done() else job.work.remove()
        raise
    return runner.run(jobs, progress, cancel, failed)


def _plan(source: Path, target: Path | None, upscaler: Upscaler, chunk_seconds: float | None, resume: bool,
          skip_errors: bool, encode: dict[str, Any], reuse: float | None) -> ChunkedJob:
    info = probe_input(source)
    output, settings, image_encoder = plan_output(info, target, upscaler, **encode)
    job = None
    if not (image_encoder or info.is_image):
        seconds = resolve_chunk_seconds(chunk_seconds, info.video.duration)
        job = ChunkedJob.plan(info, output, upscaler, settings, seconds, resume, skip_errors,
                              overwrite=encode.get("overwrite", False), reuse=reuse)
    if job is None:
        raise InputError(f"{source}: cannot be cut into chunks (a picture, a video without timestamps or a "
                         "raw-frame output such as .y4m); run it without --workers / --cluster")
    return job


def worker_count(ray: Any, requested: int | None, gpus_per_worker: float) -> int:
    """`requested`, or one worker per GPU (per `gpus_per_worker` GPUs; one without GPUs), but no more than the
    cluster can place (a CPU each, and their GPUs): a worker that never starts would hold its chunk forever."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
    by_gpu = int(gpus / gpus_per_worker) if gpus and gpus_per_worker > 0 else None
    capacity = max(1, min(cpus, by_gpu) if by_gpu is not None else cpus)
    count = requested or (by_gpu or 1)
    if count > capacity:
        log.warning("%d workers asked for, the Ray cluster has room for %d; running %d", count, capacity, capacity)
    return min(count, capacity)
