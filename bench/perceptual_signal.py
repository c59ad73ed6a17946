"""Which loss rewards detail over blur? The question a perceptual loss must answer, measured without VGG weights.

For random HR patches, a blurry candidate (bicubic down + up, what a PSNR-trained model tends to) competes with
candidates that carry the right amount of detail in the wrong place (a GAN's plausible texture). A loss "prefers
detail" on a patch when it scores the detailed candidate closer to the HR patch than the blurry one. Also prints
each loss's mean value on the blurry candidate, to balance loss weights.

    python bench/perceptual_signal.py /work/shared/data/eval/Set5 /work/shared/data/eval/Set14
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from vidsr.quality.evaluate import list_images, read_rgb
from vidsr.train import losses

LOSSES = {
    "l1": F.l1_loss,
    "fft": losses.fft_loss,
    "fft_amplitude": losses.fft_amplitude_loss,
    "ms_ssim": losses.ms_ssim_loss,
}


def random_patches(folders: list[str], size: int, per_image: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    patches = []
    for folder in folders:
        for path in list_images(folder):
            img = torch.from_numpy(read_rgb(path).copy()).permute(2, 0, 1).float() / 255
            for _ in range(per_image):
                top = int(rng.integers(0, img.shape[1] - size + 1))
                left = int(rng.integers(0, img.shape[2] - size + 1))
                patches.append(img[:, top : top + size, left : left + size])
    return torch.stack(patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders of HR images")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--per-image", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hr = random_patches(args.folders, args.size, args.per_image, seed=0)
    down = F.interpolate(hr, scale_factor=1 / args.scale, mode="bicubic", antialias=True)
    blurry = F.interpolate(down, scale_factor=args.scale, mode="bicubic").clamp(0, 1)
    detail = hr - blurry
    candidates = {
        "detail shifted 1 px": blurry + detail.roll((1, 1), (2, 3)),
        "detail of another patch": blurry + detail.roll(1, 0),
        "half the detail, in place": blurry + 0.5 * detail,
    }
    print(f"{len(hr)} patches of {args.size} px; blurry = bicubic x{args.scale} down + up")
    print("| candidate | " + " | ".join(LOSSES) + " |\n|---|" + "---|" * len(LOSSES))
    for name, candidate in candidates.items():
        cells = []
        for loss in LOSSES.values():
            wins = [
                loss(candidate[i : i + 1], hr[i : i + 1]) < loss(blurry[i : i + 1], hr[i : i + 1])
                for i in range(len(hr))
            ]
            cells.append(f"{100 * np.mean(wins):.0f}%")
        print(f"| {name} | " + " | ".join(cells) + " |")
    values = [f"{float(loss(blurry, hr)):.4f}" for loss in LOSSES.values()]
    print("| mean loss of the blurry candidate | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
