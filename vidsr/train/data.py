"""Paired training data: HR images from folders, LR made once with the MATLAB bicubic of the evaluation protocol
and cached, random aligned patches with flips and 90-degree rotations."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vidsr.errors import InputError
from vidsr.quality.evaluate import list_images, mod_crop, read_rgb, to_model_space
from vidsr.quality.resize import imresize_np


def list_training_images(folders: Iterable[str | Path]) -> list[Path]:
    folders = list(folders)
    if not folders:
        raise InputError("no training folders given (train_dirs)")
    return sorted(path for folder in folders for path in list_images(folder))


def make_pair(rgb: np.ndarray, scale: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 CxHxW arrays; LR = MATLAB imresize(HR, 1/scale) of the mod-cropped image."""
    hr = mod_crop(rgb, scale)
    lr = imresize_np(hr, 1 / scale)
    return to_model_space(lr, channels), to_model_space(hr, channels)


class PairCache:
    """All (LR, HR) pairs of a set of images in memory, cached on disk as one .npz per (images, scale, channels)."""

    def __init__(self, folders: Iterable[str | Path], scale: int, channels: int, cache_dir: str | Path,
                 min_side: int = 0) -> None:
        paths = list_training_images(folders)
        key = hashlib.sha1("\n".join(map(str, paths)).encode() + f"|{scale}|{channels}".encode()).hexdigest()[:12]
        cache_file = Path(cache_dir) / f"pairs_x{scale}_c{channels}_{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as data:
                count = len(data.files) // 2
                pairs = [(data[f"lr{i}"], data[f"hr{i}"]) for i in range(count)]
        else:
            bar = tqdm(paths, desc="caching LR/HR pairs", disable=None)  # None: no bar when not on a terminal
            pairs = [make_pair(read_rgb(p), scale, channels) for p in bar]
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            arrays = {f"{kind}{i}": arr for i, (lr, hr) in enumerate(pairs) for kind, arr in (("lr", lr), ("hr", hr))}
            # written whole under a private name, then renamed: runs that share a cache never read half a file
            partial = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.npz")
            np.savez(partial, **arrays)
            os.replace(partial, cache_file)
        self.pairs = [pair for pair in pairs if min(pair[0].shape[1:]) >= min_side]
        self.scale = scale
        if not self.pairs:
            raise InputError(f"no training image is at least {min_side * scale} pixels on each side")


class PatchSampler:
    """Random aligned LR/HR patches with random flips and 90-degree rotations. Its state is the numpy generator,
    so saving `rng.bit_generator.state` makes resuming exact."""

    def __init__(self, cache: PairCache, patch_size: int, batch_size: int, seed: int) -> None:
        self.cache = cache
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        # sample images in proportion to their area so every pixel is equally likely
        areas = np.array([lr.shape[1] * lr.shape[2] for lr, _ in cache.pairs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR) float tensors in [0, 1]: (B, C, p, p) and (B, C, s p, s p)."""
        p, s = self.patch_size, self.cache.scale
        picks = self.rng.choice(len(self.cache.pairs), size=self.batch_size, p=self.weights)
        lrs, hrs = [], []
        for index in picks:
            lr, hr = self.cache.pairs[index]
            top = int(self.rng.integers(0, lr.shape[1] - p + 1))
            left = int(self.rng.integers(0, lr.shape[2] - p + 1))
            lr_patch = lr[:, top : top + p, left : left + p]
            hr_patch = hr[:, top * s : (top + p) * s, left * s : (left + p) * s]
            flip, rotations = self.rng.integers(0, 2), int(self.rng.integers(0, 4))
            lrs.append(augment(lr_patch, flip, rotations))
            hrs.append(augment(hr_patch, flip, rotations))
        to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).float().div_(255)  # noqa: E731
        return to_tensor(lrs), to_tensor(hrs)


def augment(patch: np.ndarray, flip: int, rotations: int) -> np.ndarray:
    if flip:
        patch = patch[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(patch, rotations, axes=(1, 2)))
