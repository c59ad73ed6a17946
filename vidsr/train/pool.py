"""A pool of degraded training pairs, made once by worker processes and cached on disk, so that the GAN stage
trains at the speed of its networks rather than of the degradation chain (about 48 ms per patch on the CPU).

Pair `i` is an HR crop of `crop` pixels and its degraded LR, both drawn from a generator seeded by
(`seed`, `i`) alone: the same pair comes out of any worker, in any order, and from the cache. Pairs are stored in
shards of `shard_size`. Training draws random patches (crops, flips, 90-degree turns) from a window of `size`
consecutive pairs that slides forward by `refresh` pairs per batch; the window's next shard is made in the
background, and shards behind the window are deleted when it moves past them.

With a `teacher` (distillation), a pair's GT is the teacher's output on its LR, computed once when the shard is
made rather than at every batch: a large teacher (Real-ESRGAN's x4plus, 2.3 TMACs a 1080p frame) costs the
pool once instead of the run (`vidsr.train.teachers`).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vidsr.errors import InputError
from vidsr.train.data import PairCache, augment
from vidsr.train.degradations import DegradationConfig, make_pair
from vidsr.train.teachers import fingerprint, load_teacher, teacher_output

POOL_SHARD = 32  # pairs per shard file, at most
PAIR_PARTS = ("lr", "gt", "gt_plain")


def process_context() -> multiprocessing.context.BaseContext:
    """forkserver with the GAN trainer preloaded: workers start fast, without forking a multi-threaded trainer."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vidsr.train.gan"])
    return context


@dataclass(frozen=True)
class ShardMaker:
    """What makes pairs: the HR images (sampled in proportion to their area), the crop and the degradations."""

    images: list[np.ndarray]
    weights: np.ndarray
    crop: int
    scale: int
    config: DegradationConfig
    seed: int
    teacher: str | None = None  # a model name or path: GT is its output on LR (distillation)
    teacher_on_clean: bool = True  # False: pairs whose LR is the plain bicubic downscale keep the HR image as GT

    @property
    def parts(self) -> tuple[str, ...]:
        """The plain GT is stored only when it differs from the target (unsharp-masked GT): half the disk."""
        return PAIR_PARTS if self.config.sharpen_gt.enabled and not self.teacher else PAIR_PARTS[:2]

    def pair(self, index: int) -> tuple[list[np.ndarray], bool]:
        """Pair `index` as uint8 CxHxW arrays, and whether its LR is the plain bicubic downscale: a function of
        (`seed`, `index`) and the images only."""
        rng = np.random.default_rng([self.seed, index])
        hr = self.images[int(rng.choice(len(self.images), p=self.weights))]
        top, left = (int(rng.integers(0, side - self.crop + 1)) for side in hr.shape[1:])
        patch = torch.from_numpy(hr[:, top : top + self.crop, left : left + self.crop].copy()).float().div_(255)
        pair = make_pair(patch, self.scale, self.config, rng)
        return [(getattr(pair, part).clamp(0, 1) * 255).round().byte().numpy() for part in self.parts], pair.clean

    def teach(self, lr: np.ndarray) -> np.ndarray:
        """The teacher's output on uint8 LR patches, at the pool's scale, as uint8."""
        x = torch.from_numpy(lr).float().div_(255)
        target = teacher_output(load_teacher(self.teacher), x, self.scale).clamp_(0, 1)
        return (target * 255).round_().byte().numpy()

    def write(self, path: Path, indices: range) -> Path:
        """Make the pairs `indices` and store them as one .npz, written whole under a private name, then renamed."""
        pairs, clean = zip(*(self.pair(index) for index in indices), strict=True)
        arrays = {part: np.stack([pair[k] for pair in pairs]) for k, part in enumerate(self.parts)}
        if self.teacher:
            taught = np.flatnonzero(~np.array(clean) | self.teacher_on_clean)
            for start in range(0, len(taught), TEACHER_BATCH):
                chosen = taught[start : start + TEACHER_BATCH]
                arrays["gt"][chosen] = self.teach(arrays["lr"][chosen])
        partial = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)
        return path


TEACHER_BATCH = 4  # LR patches per teacher call


_worker_maker: ShardMaker | None = None  # a worker's copy, sent once when it starts rather than with every shard


def _start_worker(threads: int, maker: ShardMaker | None) -> None:
    global _worker_maker
    torch.set_num_threads(threads)
    _worker_maker = maker


def _write_in_worker(path: Path, indices: range) -> Path:
    assert _worker_maker is not None
    return _worker_maker.write(path, indices)


def worker_pool(workers: int, maker: ShardMaker | None = None) -> ProcessPoolExecutor | None:
    """Processes that compute with the trainer's thread count (torch's results can differ in the last bit between
    thread counts, and a flipped rounding would make the pairs depend on `workers`); None for no workers."""
    if workers <= 0:
        return None
    return ProcessPoolExecutor(workers, mp_context=process_context(), initializer=_start_worker,
                               initargs=(torch.get_num_threads(), maker))


class PairPool:
    """Degraded pairs `[start, start + size)` of an endless seeded sequence, read from (or made into) shards."""

    def __init__(self, cache: PairCache, config: DegradationConfig, size: int, crop: int, seed: int,
                 cache_dir: str | Path, workers: int = 0, teacher: str | None = None,
                 teacher_on_clean: bool = True) -> None:
        if crop % cache.scale:
            raise InputError(f"pool_crop {crop} must be a multiple of the scale {cache.scale}")
        images = [hr for _, hr in cache.pairs if min(hr.shape[1:]) >= crop]
        if not images:
            raise InputError(f"no training image is at least {crop} pixels on each side (pool_crop)")
        areas = np.array([hr.shape[1] * hr.shape[2] for hr in images], dtype=np.float64)
        self.maker = ShardMaker(images, areas / areas.sum(), crop, cache.scale, config, seed, teacher, teacher_on_clean)
        self.scale, self.size, self.crop = cache.scale, size, crop
        self.shard_size = max(1, min(POOL_SHARD, size // 4))  # the window spans several shards: it moves smoothly
        self.folder = Path(cache_dir) / f"pool_{self._key()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.executor: Executor | None = worker_pool(workers, self.maker)
        self.pending: dict[int, Future] = {}
        self.loaded: dict[int, dict[str, np.ndarray]] = {}
        self.first_shard = 0

    def _key(self) -> str:
        """Everything that decides the pairs' content names their folder: a change never reads stale pairs."""
        maker = self.maker
        digest = hashlib.sha1(json.dumps(asdict(maker.config), sort_keys=True, default=str).encode())
        for image in maker.images:
            digest.update(hashlib.sha1(image.tobytes()).digest())
        digest.update(f"{maker.scale}|{maker.crop}|{maker.seed}|{self.shard_size}".encode())
        if maker.teacher:
            digest.update(fingerprint(maker.teacher).encode())
            if not maker.teacher_on_clean:
                digest.update(b"|clean pairs keep the HR target")
        return digest.hexdigest()[:12]

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"shard_{shard:06d}.npz"

    def _request(self, shard: int) -> None:
        """Start making a shard that is neither on disk nor under way (in a worker when there are workers)."""
        path = self.shard_path(shard)
        if shard in self.loaded or shard in self.pending or path.is_file():
            return
        indices = range(shard * self.shard_size, (shard + 1) * self.shard_size)
        if self.executor:
            self.pending[shard] = self.executor.submit(_write_in_worker, path, indices)
        else:
            self.maker.write(path, indices)

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self.loaded:
            self._request(shard)
            if shard in self.pending:
                self.pending.pop(shard).result()
            with np.load(self.shard_path(shard)) as data:
                self.loaded[shard] = {part: data[part] for part in self.maker.parts}
        return self.loaded[shard]

    def move_to(self, start: int) -> None:
        """Make the window `[start, start + size)`: drop shards behind it, request every shard in it and the next
        one (made while these train)."""
        first = start // self.shard_size
        if first > self.first_shard:  # only when the window moves: no folder scan per batch
            for shard in [s for s in self.loaded if s < first]:
                del self.loaded[shard]
            for path in self.folder.glob("shard_*.npz"):
                if int(path.stem.split("_")[1]) < first:
                    path.unlink(missing_ok=True)
            self.first_shard = first
        last = (start + self.size - 1) // self.shard_size
        for shard in range(first, last + 2):
            self._request(shard)

    def pair(self, index: int) -> tuple[np.ndarray, ...]:
        """(LR, GT, plain GT) of pair `index`, which must lie in the window last moved to."""
        arrays = self._shard(index // self.shard_size)
        lr, gt = arrays["lr"][index % self.shard_size], arrays["gt"][index % self.shard_size]
        return lr, gt, arrays["gt_plain"][index % self.shard_size] if "gt_plain" in arrays else gt

    def close(self) -> None:
        if self.executor:
            self.executor.shutdown(cancel_futures=True)


class PoolSampler:
    """Batches of random patches from the pool's sliding window, in the trainer's sampler interface.

    Its randomness is `rng` (saved by the Trainer as `sampler_rng`) and the batch count, which the window's
    position follows: a sampler started at `batches = k` continues a run paused after k batches exactly.
    """

    def __init__(self, pool: PairPool, patch_size: int, batch_size: int, refresh: float, rng: np.random.Generator,
                 batches: int = 0) -> None:
        if patch_size * pool.scale > pool.crop:
            raise InputError(f"pool_crop {pool.crop} is smaller than an HR patch ({patch_size * pool.scale} px)")
        self.pool, self.patch_size, self.batch_size, self.refresh = pool, patch_size, batch_size, refresh
        self.rng = rng
        self.batches = batches

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LR input, loss target, discriminator's real image) float tensors in [0, 1]."""
        start = math.floor(self.batches * self.refresh)
        self.pool.move_to(start)
        picks = start + self.rng.integers(0, self.pool.size, size=self.batch_size)
        patches = [self._patch(self.pool.pair(int(index))) for index in picks]
        self.batches += 1
        return tuple(torch.from_numpy(np.stack(parts)).float().div_(255) for parts in zip(*patches, strict=True))

    def _patch(self, pair: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        p, s = self.patch_size, self.pool.scale
        lr = pair[0]
        top, left = (int(self.rng.integers(0, side - p + 1)) for side in lr.shape[1:])
        flip, turns = int(self.rng.integers(0, 2)), int(self.rng.integers(0, 4))
        crops = [lr[:, top : top + p, left : left + p]]
        crops += [gt[:, top * s : (top + p) * s, left * s : (left + p) * s] for gt in pair[1:]]
        return [augment(crop, flip, turns) for crop in crops]

    def close(self) -> None:
        self.pool.close()
