"""NIQE (Mittal, Soundararajan and Bovik 2013): a no-reference image quality score, lower is more natural.

An image's 96-pixel patches are described at two scales by 18 natural-scene statistics of their mean-subtracted
contrast-normalised (MSCN) luma: a generalised Gaussian fit of the coefficients and asymmetric fits of the
products of neighbours in four directions. NIQE is the distance between the Gaussian of these 36 features over
the image's patches and the Gaussian over the sharpest patches of pristine images.

The pristine model `niqe_pristine.json` is fitted by this project on its own PNG training images (no
download; BSDS500's train folder is left out: it is BSD200 again, JPEG-coded, so not pristine):

    python -m vidsr.quality.niqe fit /work/data/train/t91 /work/data/train/bsd200 /work/data/train/bsds_test \\
        -o vidsr/quality/niqe_pristine.json
    python -m vidsr.quality.niqe score IMAGE...
"""

from __future__ import annotations

import argparse
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidsr.errors import InputError
from vidsr.quality.evaluate import list_images, luma, read_eval_image
from vidsr.quality.resize import imresize_np

PATCH = 96  # patch side at full scale (48 at half scale)
SHARPNESS_SHARE = 0.75  # pristine patches: sharper than this share of the image's sharpest patch (MATLAB's niqe)
PRISTINE_MODEL = Path(__file__).with_name("niqe_pristine.json")
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # neighbours: horizontal, vertical, both diagonals


@lru_cache(maxsize=1)
def _shape_table() -> tuple[np.ndarray, np.ndarray]:
    """Candidate shape parameters of the generalised Gaussian and the moment ratio each one gives."""
    shapes = np.arange(0.2, 10.001, 0.001)
    gamma = np.vectorize(math.gamma)
    return shapes, gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))


def aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """(shape, left scale, right scale) of an asymmetric generalised Gaussian, by moment matching."""
    values = values.ravel()
    left = math.sqrt(np.mean(values[values < 0] ** 2)) if (values < 0).any() else 0.0
    right = math.sqrt(np.mean(values[values > 0] ** 2)) if (values > 0).any() else 0.0
    if left == 0 or right == 0:
        return math.nan, left, right
    ratio = left / right
    moment = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
    normalised = moment * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    shapes, table = _shape_table()
    shape = float(shapes[np.argmin((table - normalised) ** 2)])
    spread = math.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape))
    return shape, left * spread, right * spread


def patch_features(mscn: np.ndarray) -> list[float]:
    """The 18 statistics of one patch of MSCN coefficients."""
    shape, left, right = aggd_fit(mscn)
    features = [shape, (left + right) / 2]
    for shift in SHIFTS:
        shape, left, right = aggd_fit(mscn * np.roll(mscn, shift, axis=(0, 1)))
        mean = (right - left) * math.gamma(2 / shape) / math.gamma(1 / shape) if not math.isnan(shape) else math.nan
        features += [shape, mean, left, right]
    return features


@lru_cache(maxsize=1)
def _gaussian_taps() -> torch.Tensor:
    """MATLAB's fspecial('gaussian', 7, 7 / 6), as the reference implementation uses, as its 1-D factor."""
    taps = torch.exp(-torch.arange(-3, 4, dtype=torch.float64) ** 2 / (2 * (7 / 6) ** 2))
    return taps / taps.sum()


def _local_mean(x: torch.Tensor) -> torch.Tensor:
    """The 7x7 Gaussian filter as two 1-D passes (a quarter of the work), borders replicated."""
    taps = _gaussian_taps()
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), taps.view(1, 1, 1, 7))
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), taps.view(1, 1, 7, 1))


def mscn(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MSCN coefficients, local contrast) of a luma image on the 0-255 scale."""
    x = torch.from_numpy(image.astype(np.float64))[None, None]
    mean = _local_mean(x)
    contrast = (_local_mean(x * x) - mean * mean).abs().sqrt()
    return ((x - mean) / (contrast + 1))[0, 0].numpy(), contrast[0, 0].numpy()


def image_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features of every whole 96 px patch at both scales: (patches, 36), each patch's sharpness)."""
    rows, cols = image.shape[0] // PATCH, image.shape[1] // PATCH
    if rows == 0 or cols == 0:
        raise InputError(f"NIQE needs images of at least {PATCH}x{PATCH} pixels, got {image.shape[1]}x{image.shape[0]}")
    image = image[: rows * PATCH, : cols * PATCH]
    per_scale, sharpness = [], None
    for scale, side in ((image, PATCH), (imresize_np(image / 255, 0.5) * 255, PATCH // 2)):
        coefficients, contrast = mscn(scale)
        blocks = [(r * side, c * side) for r in range(rows) for c in range(cols)]
        per_scale.append([patch_features(coefficients[y : y + side, x : x + side]) for y, x in blocks])
        if sharpness is None:
            sharpness = np.array([contrast[y : y + side, x : x + side].mean() for y, x in blocks])
    return np.hstack([np.array(f) for f in per_scale]), sharpness


def read_luma(path: str | Path) -> np.ndarray:
    return luma(read_eval_image(Path(path)))


def fit_pristine(folders: list[str | Path]) -> dict:
    """The pristine model: mean and covariance of the features of the sharpest patches of every image."""
    selected, images = [], 0
    for folder in folders:
        for path in list_images(folder):
            try:
                features, sharpness = image_features(read_luma(path))
            except InputError:
                continue  # smaller than one patch
            selected.append(features[sharpness > SHARPNESS_SHARE * sharpness.max()])
            images += 1
    if not selected:
        raise InputError("no image of at least 96x96 pixels to fit the NIQE model on")
    features = np.vstack(selected)
    features = features[~np.isnan(features).any(axis=1)]
    return {"mean": features.mean(axis=0).tolist(), "cov": np.cov(features, rowvar=False).tolist(),
            "images": images, "patches": len(features), "folders": [Path(f).name for f in folders]}


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    model = json.loads(PRISTINE_MODEL.read_text())
    return np.array(model["mean"]), np.array(model["cov"])


def niqe(image: np.ndarray) -> float:
    """NIQE of an image: RGB (H, W, 3) uint8, or a luma / greyscale (H, W) array on the 0-255 scale."""
    features, _ = image_features(luma(image) if image.ndim == 3 else image)
    features = features[~np.isnan(features).any(axis=1)]
    if len(features) < 2:
        raise InputError("NIQE needs at least two 96x96 patches with usable statistics")
    pristine_mean, pristine_cov = pristine_model()
    difference = pristine_mean - features.mean(axis=0)
    pooled = (pristine_cov + np.cov(features, rowvar=False)) / 2
    return float(math.sqrt(difference @ np.linalg.pinv(pooled) @ difference))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vidsr.quality.niqe", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit the pristine model on folders of pristine images")
    fit.add_argument("folders", nargs="+")
    fit.add_argument("-o", "--output", type=Path, default=PRISTINE_MODEL)
    score = commands.add_parser("score", help="print the NIQE of images")
    score.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "fit":
        model = fit_pristine(args.folders)
        args.output.write_text(json.dumps(model))
        print(f"{args.output}: {model['patches']} patches of {model['images']} images")
    else:
        for path in args.images:
            print(f"{niqe(read_luma(path)):.3f}  {path}")


if __name__ == "__main__":
    main()
