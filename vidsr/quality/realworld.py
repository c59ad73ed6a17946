"""The project's real-world protocol and temporal-stability measure, used by `vidsr eval --realworld / --flicker`.

Real-world: the standard protocol's MATLAB-bicubic LR image is blurred (Gaussian, sigma 0.8), gets sensor noise
(Gaussian, sigma 3 levels) and goes through a libx264 round trip at CRF 28 as the middle frame of a 5-frame pan
(a P or B frame), each image with its own fixed seed. Reported: NIQE of the output (no reference; lower is more
natural), Y-PSNR / SSIM against the clean HR image, the output's tone against its input: the change of mean
luma (dY, 8-bit levels) and the ratio of luma standard deviations (contrast; 1 = unchanged), and haloes: the
overshoot beyond the clean image's local range next to its strong edges (`vidsr.quality.metrics.overshoot`).

Flicker: each HR image becomes a clip of FLICKER_FRAMES frames whose top half is still and whose bottom half
pans by one LR pixel per frame. The LR frames get blur and independent noise, and the clip one libx264 round
trip. Flicker is the mean absolute luma change between consecutive output frames minus the same for the ground
truth, in 8-bit levels: over the whole frame, and on static pixels (those the ground truth leaves unchanged),
where any change is shimmer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidsr.quality.evaluate import LumaPredictor, list_images, luma, mod_crop, read_eval_image
from vidsr.quality.metrics import overshoot, psnr, ssim
from vidsr.quality.niqe import niqe
from vidsr.quality.resize import imresize_np
from vidsr.train.degradations import (
    CodecConfig,
    codec_roundtrip,
    covariance,
    filter2d,
    gaussian_kernel,
    gaussian_noise,
    random_codec,
)

BLUR_SIGMA = 0.8  # LR pixels
NOISE_SIGMA = 3.0  # 8-bit levels
CRF = 28
CODEC = CodecConfig(prob=1.0, codecs=("libx264",), crf_range=(CRF, CRF), gop_range=(8, 8), bframes_range=(2, 2),
                    frames_range=(5, 5), max_shift=2)
FLICKER_FRAMES = 6


@dataclass
class RealWorldResult:
    dataset: str
    scale: int
    niqe: float
    psnr: float
    ssim: float
    dy: float  # mean output luma minus mean input luma, 8-bit levels
    std_ratio: float  # output luma standard deviation over the input's
    overshoot: float  # beyond the clean image's local range next to its edges (haloes), 8-bit levels


@dataclass
class FlickerResult:
    dataset: str
    scale: int
    flicker: float  # mean |change| between output frames minus the ground truth's, 8-bit levels
    static_flicker: float  # the same on pixels the ground truth leaves unchanged


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)  # a grey image stays grey
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def _to_image(tensor: torch.Tensor, grey: bool) -> np.ndarray:
    rgb = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return np.rint(rgb.mean(axis=2)).astype(np.uint8) if grey else rgb


def _blur_and_noise(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    kernel = gaussian_kernel(7, covariance(BLUR_SIGMA, BLUR_SIGMA, 0.0))
    return gaussian_noise(filter2d(image, kernel), NOISE_SIGMA / 255, gray=False, rng=rng)


def degrade_lr(lr: np.ndarray, seed: int) -> np.ndarray:
    """The real-world protocol's input from a clean uint8 LR image (RGB or greyscale), reproducible by `seed`."""
    rng = np.random.default_rng(seed)
    return _to_image(random_codec(_blur_and_noise(_to_tensor(lr), rng), CODEC, rng), grey=lr.ndim == 2)


def degrade_clip(frames: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Blur and independent noise on every LR frame, then one libx264 round trip of the whole clip."""
    rng = np.random.default_rng(seed)
    noisy = [_blur_and_noise(_to_tensor(frame), rng) for frame in frames]
    coded = codec_roundtrip(noisy, "libx264", CRF, gop=8, bframes=2)
    return [_to_image(frame, grey=frames[0].ndim == 2) for frame in coded]


def _hr_images(hr_dir: str | Path, scale: int) -> list[np.ndarray]:
    return [mod_crop(read_eval_image(path), scale) for path in list_images(hr_dir)]


def evaluate_realworld(predict: LumaPredictor, hr_dir: str | Path, scale: int) -> RealWorldResult:
    rows = []
    for seed, hr in enumerate(_hr_images(hr_dir, scale)):
        lr = degrade_lr(imresize_np(hr, 1 / scale), seed)
        sr_y, lr_y, hr_y = predict(lr), luma(lr), luma(hr)
        rows.append((niqe(sr_y), psnr(hr_y, sr_y, scale), ssim(hr_y, sr_y, scale),
                     sr_y.mean() - lr_y.mean(), sr_y.std() / lr_y.std(), overshoot(hr_y, sr_y, scale)))
    means = np.nanmean(rows, axis=0)  # overshoot is NaN for a picture without strong edges
    return RealWorldResult(Path(hr_dir).name, scale, *(float(value) for value in means))


def still_and_panning(hr: np.ndarray, scale: int, frames: int) -> list[np.ndarray]:
    """Ground-truth frames: the top half of `hr` still, the bottom half panning `scale` pixels per frame."""
    middle = hr.shape[0] // 2 // scale * scale
    clip = []
    for index in range(frames):
        frame = hr.copy()
        frame[middle:] = np.roll(hr[middle:], index * scale, axis=1)
        clip.append(frame)
    return clip


def _luma_changes(frames: list[np.ndarray]) -> np.ndarray:
    """(frames - 1, H, W) absolute luma change between consecutive frames."""
    lumas = [luma(frame) for frame in frames]
    return np.abs(np.diff(np.stack(lumas), axis=0))


def evaluate_flicker(predict: LumaPredictor, hr_dir: str | Path, scale: int,
                     frames: int = FLICKER_FRAMES) -> FlickerResult:
    overall, static = [], []
    for seed, hr in enumerate(_hr_images(hr_dir, scale)):
        truth = still_and_panning(hr, scale, frames)
        inputs = degrade_clip([imresize_np(frame, 1 / scale) for frame in truth], seed)
        truth_change = _luma_changes(truth)
        output_change = np.abs(np.diff(np.stack([predict(lr) for lr in inputs]), axis=0))
        still = truth_change == 0
        overall.append(output_change.mean() - truth_change.mean())
        static.append(output_change[still].mean())
    return FlickerResult(Path(hr_dir).name, scale, float(np.mean(overall)), float(np.mean(static)))
