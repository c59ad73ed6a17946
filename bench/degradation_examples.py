"""Contact sheet of training inputs: an HR crop, its bicubic x4 input, and inputs made by the Real-ESRGAN chain
and by the "video" preset (chain + libx264 / libx265 round trip), shown at HR size (nearest neighbour).

    python bench/degradation_examples.py /work/data/train/bsds_test/102062.jpg docs/img/degradations.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vidsr.quality.evaluate import read_rgb
from vidsr.quality.resize import imresize_np
from vidsr.train.degradations import DegradationConfig, degrade

SCALE = 4


def _tile(img: torch.Tensor, size: int, label: str) -> Image.Image:
    """`(3, h, w)` in [0, 1] -> a size x size tile (nearest neighbour) with a caption."""
    up = F.interpolate(img[None], size=(size, size), mode="nearest")[0]
    tile = Image.fromarray((up.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, size, 14), fill=(0, 0, 0))
    draw.text((3, 1), label, fill=(255, 255, 255))
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--crop", type=int, default=192, help="HR crop side (a multiple of 4)")
    args = parser.parse_args()
    rgb = read_rgb(args.image)
    top, left = (rgb.shape[0] - args.crop) // 2, (rgb.shape[1] - args.crop) // 2
    crop = rgb[top : top + args.crop, left : left + args.crop]
    hr = torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255
    bicubic = torch.from_numpy(imresize_np(crop, 1 / SCALE).copy()).permute(2, 0, 1).float() / 255
    tiles = [_tile(hr, args.crop, "HR"), _tile(bicubic, args.crop, "bicubic x4")]
    for seed in (1, 2):
        lr = degrade(hr, SCALE, DegradationConfig(), np.random.default_rng(seed))
        tiles.append(_tile(lr, args.crop, f"Real-ESRGAN chain #{seed}"))
    for seed in (3, 4):
        video = DegradationConfig.video()
        video.codec.prob = 1.0
        tiles.append(_tile(degrade(hr, SCALE, video, np.random.default_rng(seed)), args.crop, f"video preset #{seed}"))
    sheet = Image.new("RGB", (args.crop * len(tiles), args.crop))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, (index * args.crop, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
