"""Model throughput on the CPU: one model call with intra-op threads vs two single-thread workers.

    python bench/cpu_workers.py intra [--compile]     # torch threads = 2, one call at a time
    python bench/cpu_workers.py workers [--compile]   # torch threads = 1, two Python threads calling the model

Batches of four 640x360 YUV 4:2:0 frames through `Upscaler.upscale_planes` (espcn-x2), as the engine runs
them. Used to decide how the engine uses a 2-core CPU (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch

from vidsr.compute.upscaler import Upscaler
from vidsr.media.frames import plane_layout
from vidsr.media.info import ColorInfo

BATCHES, FRAMES = 24, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["intra", "workers"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2 if args.mode == "intra" else 1)
    upscaler = Upscaler("espcn-x2", device="cpu", compile=args.compile)
    layout, color = plane_layout("yuv420p"), ColorInfo(matrix=1)
    rng = np.random.default_rng(0)
    planes = [torch.from_numpy(rng.integers(16, 236, (FRAMES, h, w), dtype=np.uint8))
              for h, w in ((360, 640), (180, 320), (180, 320))]

    def work(batches: int) -> None:
        for _ in range(batches):
            upscaler.upscale_planes(planes, layout, color)

    work(3)  # warm-up (and compilation)
    start = time.perf_counter()
    if args.mode == "intra":
        work(BATCHES)
    else:
        workers = [threading.Thread(target=work, args=(BATCHES // 2,)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    fps = BATCHES * FRAMES / (time.perf_counter() - start)
    print(f"{args.mode}{' compiled' if args.compile else ''}: {fps:.1f} fps")


if __name__ == "__main__":
    main()
