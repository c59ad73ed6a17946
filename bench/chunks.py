"""What chunking costs and what Ray workers give, on a generated clip through espcn-x2 on the CPU.

    python bench/chunks.py OUT_DIR [--seconds 12] [--chunk 3] [--size 320x180] [--ray]

The clip has a keyframe every second (24 frames, B-frames). Measures, each once, in this order: a single
run; the same job chunked (`--chunk` seconds), with its parts timed separately (keyframe scan + plan, the
chunks, the join); the resume cost (planning again over a work folder whose chunks are all done: manifest,
checksums) and the join per GB of chunks; the object-store form of the chunks (packet extraction, bytes
shipped); with `--ray`, the chunked job on 1 and then 2 Ray workers of one CPU thread each (Ray started with
2 CPUs; its start-up counted separately, the workers' model load included). Prints each figure as one JSON
line as soon as it is measured (a slow shared machine may not reach the end). `--remux MB` also times a
stream-copy remux of a lossless noise clip of about MB megabytes: the per-byte work of the join, which the
small chunks above hide behind its fixed costs.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import torch

import vidsr
from vidsr.compute.upscaler import Upscaler
from vidsr.media.chunks import chunk_packets, keyframe_times, plan_chunks
from vidsr.media.pipeline import ChunkedJob, plan_output, probe_input
from vidsr.tools.sample import ClipSpec, pattern_frame, write_clip

MODEL = "espcn-x2"


def report(**figures: object) -> None:
    print(json.dumps(figures), flush=True)


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


def remux_rate(out_dir: Path, megabytes: float) -> None:
    import av
    import numpy as np

    src = out_dir / "noise.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(src), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for _ in range(int(megabytes * 1e6 / (640 * 360 * 1.5)) + 1):  # noise: FFV1 cannot compress it
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    def remux() -> None:
        with av.open(str(src)) as inp, av.open(str(out_dir / "remux.mkv"), "w") as out:
            stream = out.add_stream_from_template(inp.streams.video[0])
            for packet in inp.demux(inp.streams.video[0]):
                if packet.size:
                    packet.stream = stream
                    out.mux(packet)

    seconds, _ = timed(remux)
    size = src.stat().st_size
    report(remux_mb=size / 1e6, remux_s=seconds, remux_s_per_gb=seconds / (size / 1e9))


def ray_runs(src: Path, out_dir: Path, seconds: float) -> None:
    import ray

    from vidsr.jobs.batch import upscale_path

    start_s, _ = timed(ray.init, num_cpus=2, include_dashboard=False, log_to_driver=False,
                       object_store_memory=300 * 2**20)
    report(ray_start_s=start_s)
    try:
        for workers in (1, 2):
            wall, _ = timed(upscale_path, src, out_dir / f"ray{workers}.mkv", model=MODEL, device="cpu",
                            chunk_seconds=seconds, workers=workers, overwrite=True)
            report(**{f"ray_{workers}_workers_s": wall})
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--chunk", type=float, default=3)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--ray", action="store_true")
    parser.add_argument("--remux", type=float, metavar="MB")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    width, height = map(int, args.size.split("x"))
    rate = Fraction(24)
    spec = ClipSpec(width=width, height=height, frames=int(args.seconds * rate), rate=rate, audio=True,
                    options=(("crf", "18"), ("g", "24"), ("keyint_min", "24"), ("sc_threshold", "0")))
    # Fresh frames: testsrc2's come marked as I-frames, which x264 would obey (an all-intra clip)
    src = write_clip(args.out_dir / "input.mp4", spec,
                     frames=[pattern_frame(width, height, t) for t in range(spec.frames)])
    upscaler = Upscaler(MODEL, device="cpu")
    report(frames=spec.frames, size=args.size, chunk_seconds=args.chunk, torch_threads=torch.get_num_threads())
    single_s, _ = timed(vidsr.upscale_video, src, args.out_dir / "single.mkv", upscaler=upscaler, chunk_seconds=0,
                        overwrite=True)
    report(single_s=single_s)
    parts = chunked_parts(src, args.out_dir / "chunked.mkv", upscaler, args.chunk)
    report(**parts, split_join_share=(parts["plan_s"] + parts["join_s"]) / single_s,
           resume_share=parts["resume_plan_s"] / single_s)
    report(**packet_extraction(src, args.chunk))
    if args.remux:
        remux_rate(args.out_dir, args.remux)
    if args.ray:
        ray_runs(src, args.out_dir, args.chunk)


if __name__ == "__main__":
    main()
