"""What a degraded-pair pool costs: seconds and disk bytes per pair for a GAN config's degradations and crop.

    python bench/pool_build.py configs/srvgg_x2_video_realesrgan.toml --pairs 64 --workers 1 --out /tmp/pool

Builds the first `--pairs` pairs of the config's pool (seed, crop, degradation chain) into `--out` and prints
the time per pair and the disk per pair, from which a pool size's build time and disk follow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vidsr.train.data import PairCache
from vidsr.train.gan import degradation_config, load_gan_config
from vidsr.train.pool import PairPool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a GAN training config with a [gan.degradation] table")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for the pool's shards")
    args = parser.parse_args()
    config, gan = load_gan_config(args.config)
    if gan is None or gan.degradation is None:
        raise SystemExit(f"{args.config} has no [gan.degradation] table")
    channels = config.hyperparams.get("channels", 3)
    cache = PairCache(config.train_dirs, config.scale, channels, config.cache_dir or args.out, config.patch_size)
    crop = gan.pool_crop or 2 * config.patch_size * config.scale
    pool = PairPool(cache, degradation_config(gan.degradation), args.pairs, crop, config.seed, args.out, args.workers)
    start = time.perf_counter()
    pool.move_to(0)
    for shard in range(-(-args.pairs // pool.shard_size)):
        pool.pair(shard * pool.shard_size)  # waits for the shard
    pool.close()  # waits for the shard after the window too: all counted files are whole
    seconds = time.perf_counter() - start
    files = list(pool.folder.glob("shard_*.npz"))
    made = len(files) * pool.shard_size  # the window's shards and the next one
    size = sum(path.stat().st_size for path in files)
    print(f"{made} pairs of {crop} px (HR) in {seconds:.0f} s with {args.workers} worker(s): "
          f"{seconds / made * 1000:.0f} ms and {size / made / 1000:.0f} kB per pair")


if __name__ == "__main__":
    main()
