"""upscale_path(): one file, or every video and image in a folder, through one loaded model."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidsr.compute.upscaler import Upscaler
from vidsr.errors import Cancelled, InputError, OutputError, VidsrError
from vidsr.media.info import probe
from vidsr.media.pipeline import IMAGE_ENCODERS, given_or_new_upscaler, output_name, upscale_video

log = logging.getLogger("vidsr")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".y4m",
                  ".mpg", ".mpeg", ".ogv"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | set(IMAGE_ENCODERS) | {".gif"}


def folder_media(folder: Path) -> list[Path]:
    """Video and image files directly inside `folder`, sorted by name; the other files and the subfolders are
    named in a notice (hidden and partial files are skipped silently)."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    _name_skipped(folder, [p.name for p in files if p.suffix.lower() not in MEDIA_SUFFIXES],
                  "file(s) that are not video or images by their suffix")
    _name_skipped(folder, [p.name for p in entries if p.is_dir()], "subfolder(s); a folder run does not go into them")
    return [p for p in files if p.suffix.lower() in MEDIA_SUFFIXES]


def _name_skipped(folder: Path, names: list[str], what: str) -> None:
    if names:
        log.warning("%s: skipped %d %s: %s", folder, len(names), what,
                    ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else ""))


def output_names(files: list[Path]) -> dict[Path, str]:
    """Each file's output name in the output folder. Where two would share one (a.gif and a.mp4 both make
    a.mp4), those whose suffix changes keep it in the name (a_gif.mp4), said in a notice."""
    names = {file: output_name(file) for file in files}
    taken = Counter(names.values())
    for file, name in names.items():
        if taken[name] > 1 and Path(name).suffix != file.suffix:
            names[file] = f"{file.stem}_{file.suffix[1:]}{Path(name).suffix}"
            log.warning("%s: written as %s, since %s is another file's output", file.name, names[file], name)
    return names


def upscale_path(input: str | Path, output: str | Path | None = None, *,
                 model: str | Path | Sequence[str | Path] = "espcn-x2",
                 device: str = "auto", precision: str = "auto", tile: int | None = None, tile_pad: int = 16,
                 max_memory: float | None = None, compile: bool = False, strength: float | None = None,
                 workers: int | None = None, cluster: str | None = None, cluster_token: str | None = None,
                 gpus_per_worker: float = 1.0,
                 shared_path: bool = False, upscaler: Upscaler | None = None,
                 **options: Any) -> list[Path]:
    """Upscale a file (like `upscale_video`) or a folder of files into an output folder, with one model or a
    chain of models (a list, run in order in one pass).

    A folder's output defaults to `<folder>_x<scale>` beside it and is created if missing; each file keeps
    its name (GIFs become MP4). A folder run can be resumed: outputs that exist are skipped unless
    `overwrite`, and a file that fails is reported and the others still run (the run then raises a
    VidsrError naming the failures). `options` are passed to `upscale_video`. Returns the paths written.
    `upscaler` runs an Upscaler already built (then leave the model settings out).
    With `workers` or `cluster` the videos run on Ray (`vidsr.jobs.distributed.upscale_files`), every file's
    chunks spread over the workers at once; `cluster_token` is the token of a cluster with token
    authentication (`vidsr.jobs.cluster.connect`).
    """
    input_path = Path(input)
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or directory")
    files = folder_media(input_path) if input_path.is_dir() else [input_path]
    if not files:
        raise InputError(f"{input_path}: folder holds no video or image files")
    if not input_path.is_dir():
        probe(input_path)  # a bad input is reported before minutes are spent loading a model
    on_ray = None
    if (workers is not None or cluster) and options.get("assume_fps") is not None:
        raise InputError("--assume-fps numbers the frames in order, which chunks on Ray workers cannot share; "
                         "run it without --workers / --cluster")
    if workers is not None or cluster:
        from vidsr.jobs import cluster as ray_cluster
        from vidsr.jobs import distributed

        distributed.check_scale_out(workers, gpus_per_worker)
        ray_cluster.connect(cluster, cluster_token)  # a wrong address is reported before the model loads, too
        model_options = dict(precision=precision, tile=tile, tile_pad=tile_pad, max_memory=max_memory,
                             compile=compile)
        chunk_options = {key: value for key, value in options.items() if key != "assume_fps"}  # None: see above
        on_ray = functools.partial(distributed.upscale_files, workers=workers, cluster=cluster,
                                   cluster_token=cluster_token, gpus_per_worker=gpus_per_worker,
                                   shared_path=shared_path, upscaler_options=model_options, **chunk_options)
    upscaler = given_or_new_upscaler(upscaler, model=model, device=device, precision=precision, tile=tile,
                                     tile_pad=tile_pad, max_memory=max_memory, compile=compile, strength=strength)
    if not input_path.is_dir():
        if on_ray:
            return on_ray([(input_path, Path(output) if output is not None else None)], upscaler)
        return [upscale_video(input_path, output, upscaler=upscaler, **options)]
    out_dir = Path(output) if output is not None else input_path.with_name(f"{input_path.name}_x{upscaler.scale}")
    if out_dir.resolve() == input_path.resolve():
        raise OutputError(f"{out_dir}: output folder must differ from the input folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file; a folder's results go into a folder (-o FOLDER)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output folder ({exc.strerror.lower()})") from None
    written, failed = [], []
    todo = []
    for file, name in output_names(files).items():
        target = out_dir / name
        if target.exists() and not options.get("overwrite"):
            log.warning("%s: exists, skipped (--overwrite redoes it)", target)
            continue
        todo.append((file, target))
    if on_ray:
        videos = [(file, target) for file, target in todo if file.suffix.lower() in VIDEO_SUFFIXES]
        written.extend(on_ray(videos, upscaler, failed=failed))
        todo = [pair for pair in todo if pair not in videos]  # pictures: here
    for file, target in todo:
        try:
            written.append(upscale_video(file, target, upscaler=upscaler, **options))
        except Cancelled:
            raise
        except VidsrError as exc:
            log.error("error: %s", exc)
            failed.append(file.name)
    if failed:
        raise VidsrError(f"{len(failed)} of {len(files)} files failed ({', '.join(failed)}); "
                         f"the others are in {out_dir}")
    return written

