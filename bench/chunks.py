"""What chunking costs and what Ray workers give, on a generated clip through espcn-x2 on the CPU.

    python bench/chunks.py OUT_DIR [--seconds 20] [--chunk 2] [--size 320x180] [--ray]

Measures, each once, in this order: a single run; the same job chunked (`--chunk` seconds), with its parts
timed separately (keyframe scan + plan, the chunks, the join); the resume cost (planning again over a work
folder whose chunks are all done: manifest, checksums) and the join per GB of chunks; the object-store form
of a chunk (packet extraction); with `--ray`, the chunked job on 1 and then 2 Ray workers of one CPU thread
each (Ray started with 2 CPUs; start-up and model load counted separately). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import torch

import vidsr
from vidsr.media.chunks import chunk_packets, keyframe_times, plan_chunks
from vidsr.media.pipeline import ChunkedJob, plan_output, probe_input
from vidsr.sample import ClipSpec, write_clip
from vidsr.upscaler import Upscaler

MODEL = "espcn-x2"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def chunked_parts(src: Path, out: Path, upscaler: Upscaler, seconds: float) -> dict[str, float]:
    """The chunked job in its parts: plan (keyframe scan, fingerprint, model hash), chunks, resume, join."""
    info = probe_input(src)
    output, settings, _ = plan_output(info, out, upscaler, overwrite=True)
    plan_s, job = timed(ChunkedJob.plan, info, output, upscaler, settings, seconds, False)
    chunks_s, _ = timed(job.run_chunks, upscaler, 4, False, None)
    job.work.close()
    resume_s, job = timed(ChunkedJob.plan, info, output, upscaler, settings, seconds, True)
    assert not job.pending()
    chunk_bytes = sum(job.work.chunk_path(c.index).stat().st_size for c in job.chunks)
    join_s, _ = timed(job.join)
    scan_s, keyframes = timed(keyframe_times, src)
    return {"chunks": len(job.chunks), "plan_s": plan_s, "keyframe_scan_s": scan_s, "chunks_s": chunks_s,
            "resume_plan_s": resume_s, "join_s": join_s, "chunk_mb": chunk_bytes / 1e6,
            "join_s_per_gb": join_s / (chunk_bytes / 1e9), "input_mb": src.stat().st_size / 1e6}


def packet_extraction(src: Path, seconds: float) -> dict[str, float]:
    info = probe_input(src)
    chunks = plan_chunks(keyframe_times(src), info.video.time_base, seconds)
    extract_s, blobs = timed(lambda: [chunk_packets(src, c) for c in chunks])
    return {"extract_s": extract_s, "shipped_mb": sum(len(b) for b in blobs) / 1e6}


def ray_runs(src: Path, out_dir: Path, seconds: float) -> dict[str, float]:
    import ray

    from vidsr.batch import upscale_path

    start_s, _ = timed(ray.init, num_cpus=2, include_dashboard=False, log_to_driver=False,
                       object_store_memory=300 * 2**20)
    results = {"ray_start_s": start_s}
    try:
        for workers in (1, 2):
            wall, _ = timed(upscale_path, src, out_dir / f"ray{workers}.mkv", model=MODEL, device="cpu",
                            chunk_seconds=seconds, workers=workers, overwrite=True)
            results[f"ray_{workers}_workers_s"] = wall
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--chunk", type=float, default=2)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--ray", action="store_true")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    width, height = map(int, args.size.split("x"))
    rate = Fraction(24)
    spec = ClipSpec(width=width, height=height, frames=int(args.seconds * rate), rate=rate, audio=True,
                    options=(("crf", "18"), ("g", "48"), ("keyint_min", "48"), ("sc_threshold", "0")))
    src = write_clip(args.out_dir / "input.mp4", spec)
    upscaler = Upscaler(MODEL, device="cpu")
    single_s, _ = timed(vidsr.upscale_video, src, args.out_dir / "single.mkv", upscaler=upscaler, chunk_seconds=0,
                        overwrite=True)
    parts = chunked_parts(src, args.out_dir / "chunked.mkv", upscaler, args.chunk)
    result = {"frames": spec.frames, "size": args.size, "chunk_seconds": args.chunk,
              "torch_threads": torch.get_num_threads(), "single_s": single_s, **parts,
              **packet_extraction(src, args.chunk)}
    result["split_join_share"] = (parts["plan_s"] + parts["join_s"]) / single_s
    result["resume_share"] = parts["resume_plan_s"] / single_s
    if args.ray:
        result.update(ray_runs(src, args.out_dir, args.chunk))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
