"""Standard SR evaluation: mod-crop HR, LR = MATLAB bicubic imresize(HR, 1/scale), PSNR / SSIM on BT.601 luma with
`scale` pixels shaved from each border, averaged per image (see docs/MODELS.md).

A greyscale image (Set14's bridge) is its own luma, as in the MATLAB protocol: converting it to RGB first and
then to BT.601 Y squeezes it into [16, 235] and adds about 1.3 dB to its PSNR (0.09 dB to Set14's mean).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidsr.color import luma_from_model, luma_to_model
from vidsr.errors import InputError
from vidsr.models.archs import ModelDescriptor
from vidsr.quality.metrics import psnr, rgb_to_y, ssim
from vidsr.quality.resize import imresize_np

IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}

# LR uint8 image, RGB (H, W, 3) or greyscale (H, W) -> super-resolved luma (sH, sW) on the 0-255 scale
LumaPredictor = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    dataset: str
    scale: int
    psnr: float
    ssim: float
    per_image: list[dict[str, float | str]] = field(default_factory=list)


def list_images(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no images found in {folder}")
    return paths


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def read_eval_image(path: Path) -> np.ndarray:
    """RGB (H, W, 3), or (H, W) for a greyscale file: evaluation keeps grey images grey."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L" if img.mode in ("1", "L", "LA") else "RGB"))


def luma(img: np.ndarray) -> np.ndarray:
    """BT.601 Y of an RGB image on the 0-255 scale; a greyscale image is its own luma."""
    return rgb_to_y(img) if img.ndim == 3 else img.astype(np.float64)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_model_space(rgb: np.ndarray, channels: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> CxHxW uint8 in a model's colour space; luma is rounded to 8 bits, as a video's is.

    An HxW greyscale image is the luma plane itself, or three equal channels for an RGB model.
    """
    if rgb.ndim == 2:
        return rgb[None] if channels == 1 else np.repeat(rgb[None], 3, axis=0)
    if channels == 1:
        return np.floor(rgb_to_y(rgb) + 0.5).astype(np.uint8)[None]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def bicubic_predictor(scale: int) -> LumaPredictor:
    return lambda lr: luma(imresize_np(lr, scale))


def model_predictor(descriptor: ModelDescriptor, device: str | torch.device = "cpu") -> LumaPredictor:
    """Run the model on the whole LR image; the output is rounded to 8 bits before measuring, as published."""
    descriptor.model.to(device).eval()  # modules move in place: descriptor.run uses it

    @torch.no_grad()
    def predict(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_model_space(lr, descriptor.in_channels)).float().div(255)[None].to(device)
        full_range_grey = descriptor.color == "y" and descriptor.luma_range == "full"
        if full_range_grey:  # the protocol's Y is studio range; a third-party grey model expects full-range grey
            x = luma_from_model(x)
        out = descriptor.run(x)
        if full_range_grey:
            out = luma_to_model(out)
        out = out[0].clamp(0, 1).mul(255).add(0.5).floor().byte().cpu().numpy()
        if descriptor.color == "y":
            return out[0].astype(np.float64)
        return out.mean(axis=0) if lr.ndim == 2 else rgb_to_y(out.transpose(1, 2, 0))

    return predict


def evaluate_dataset(predict: LumaPredictor, hr_dir: str | Path, scale: int) -> EvalResult:
    per_image: list[dict[str, float | str]] = []
    for path in list_images(hr_dir):
        hr = mod_crop(read_eval_image(path), scale)
        sr_y = predict(imresize_np(hr, 1 / scale))
        hr_y = luma(hr)
        if sr_y.shape != hr_y.shape:
            raise InputError(f"{path.name}: prediction is {sr_y.shape}, expected {hr_y.shape}")
        per_image.append({"image": path.name, "psnr": psnr(hr_y, sr_y, scale), "ssim": ssim(hr_y, sr_y, scale)})
    return EvalResult(
        dataset=Path(hr_dir).name, scale=scale,
        psnr=float(np.mean([r["psnr"] for r in per_image])), ssim=float(np.mean([r["ssim"] for r in per_image])),
        per_image=per_image,
    )
