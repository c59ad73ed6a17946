"""How models do on compressed video: Set5 / Set14 through a real codec, and crops from real video frames.

1. Quality on coded input: the standard protocol (`vidsr.quality.evaluate`), except that each MATLAB-bicubic LR image
   becomes the middle frame of a short libx264 pan clip at CRF `--crf` before the model sees it.
   Y-PSNR / SSIM against the HR image, shave = scale. The first row is the clean protocol (no codec) for
   reference.
2. Crops: Set14's two video frames (foreman and coastguard, CIF sequences) as pan clips at their own size,
   coded with libx264 at CRF `--crf`, then upscaled by `--scale` by the engine (`vidsr.upscale_video`) with each
   model. The middle frame's crop (256 output pixels a side), bicubic and each model side by side, the input
   shown at the output's size (nearest neighbour).

    python bench/realworld.py --models espcn-x2 srvgg-x2 srvgg-x2-video --image docs/img/realworld_x2.png
    python bench/realworld.py --scale 4 --models srvgg-x4 srvgg-x4-video --image docs/img/realworld_x4.png
    python bench/realworld.py --scale 4 --models realesrgan-x4plus --no-table --margin 24 --image x4plus.png
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from vidsr import upscale_video
from vidsr.models.zoo import load_model
from vidsr.quality.evaluate import LumaPredictor, bicubic_predictor, evaluate_dataset, model_predictor, read_rgb
from vidsr.quality.resize import imresize_np
from vidsr.train.degradations import CodecConfig, random_codec

EVAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eval"
FRAMES = {"foreman.png": (214, 104), "coastguard.png": (124, 124)}  # crop centre (x, y) in the CIF frame
TILE = 256  # output crop side
MIDDLE = 4  # the pan clip's unshifted frame: frames // 2


def coded(crf: int) -> Callable[[np.ndarray], np.ndarray]:
    """LR uint8 image -> the same frame after a libx264 round trip inside a 5-frame pan (a P / B frame)."""
    config = CodecConfig(prob=1.0, codecs=("libx264",), crf_range=(crf, crf), gop_range=(8, 8),
                         bframes_range=(2, 2), frames_range=(5, 5), max_shift=2)

    def code(lr: np.ndarray) -> np.ndarray:
        rgb = lr if lr.ndim == 3 else np.repeat(lr[..., None], 3, axis=2)  # a greyscale image stays grey
        img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
        out = random_codec(img, config, np.random.default_rng(lr.shape[0] * 7919 + lr.shape[1]))
        out = (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return out if lr.ndim == 3 else np.rint(out.mean(axis=2)).astype(np.uint8)

    return code


def quality_table(models: list[str], crf: int, datasets: list[Path], scale: int) -> None:
    predictors: dict[str, LumaPredictor] = {"bicubic": bicubic_predictor(scale)}
    predictors |= {name: model_predictor(load_model(name)) for name in models}
    code = coded(crf)
    print(f"| model | input | {' | '.join(d.name for d in datasets)} |")
    print(f"|---|---|{'---|' * len(datasets)}")
    for name, predict in predictors.items():
        for label, feed in (("clean", predict), (f"x264 CRF {crf}", lambda lr, p=predict: p(code(lr)))):
            cells = [evaluate_dataset(feed, d, scale) for d in datasets]
            print(f"| {name} | {label} | {' | '.join(f'{r.psnr:.2f} / {r.ssim:.4f}' for r in cells)} |")


def _pan_clip(path: Path, rgb: np.ndarray, crf: int, frames: int = 2 * MIDDLE + 1) -> None:
    """A slow diagonal pan through `rgb` (1 px a frame) coded with libx264; frame MIDDLE is the centred crop."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": str(crf), "preset": "medium"})
        height, width = (side - 2 * frames - (side - 2 * frames) % 2 for side in rgb.shape[:2])
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for index in range(frames):
            shift = index + frames // 2
            crop = np.ascontiguousarray(rgb[shift : shift + height, shift : shift + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(stream.encode())


def _frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path} has no frame {index}")


def _nearest(rgb: np.ndarray, scale: int) -> np.ndarray:
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


def _labelled(rgb: np.ndarray, label: str) -> Image.Image:
    tile = Image.fromarray(rgb)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, tile.width, 14), fill=(0, 0, 0))
    draw.text((3, 1), label, fill=(255, 255, 255))
    return tile


def _region_clip(clip: Path, out: Path, left: int, top: int, side: int) -> Path:
    """The decoded frames of `clip` in the square of `side` at (`left`, `top`) (even; cut at the frame's edges),
    losslessly (FFV1, yuv420p): the same input pixels for a model too slow to upscale whole frames here."""
    with av.open(str(clip)) as source, av.open(str(out), "w") as target:
        stream = target.add_stream("ffv1", rate=25)
        for frame in source.decode(video=0):
            right, bottom = min(left + side, frame.width) // 2 * 2, min(top + side, frame.height) // 2 * 2
            if not stream.codec_context.is_open:
                stream.width, stream.height, stream.pix_fmt = right - left, bottom - top, "yuv420p"
            planes = frame.to_ndarray()  # yuv420p: the (H, W) luma, then both chroma planes, as rows of W
            luma = planes[: frame.height][top:bottom, left:right]
            chroma = planes[frame.height :].reshape(2, frame.height // 2, frame.width // 2)
            region = av.VideoFrame(right - left, bottom - top, "yuv420p")
            for plane, data in zip(region.planes, (luma, *chroma[:, top // 2 : bottom // 2, left // 2 : right // 2]),
                                   strict=True):
                rows = np.zeros((plane.height, plane.line_size), np.uint8)
                rows[:, : data.shape[1]] = data
                plane.update(rows)
            target.mux(stream.encode(region))
        target.mux(stream.encode())
    return out


def crop_sheet(models: list[str], crf: int, out: Path, scale: int, margin: int | None = None) -> None:
    """One row a frame: the coded input (nearest), bicubic, then each model through the engine (on the whole
    frame, or with `margin` on the crop and `margin` input pixels around it: for models too slow for the CPU)."""
    crop = TILE // scale  # input pixels
    labels = [f"input, x264 CRF {crf} (nearest)", "bicubic", *(Path(model).stem for model in models)]
    rows: list[list[np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, centre in FRAMES.items():
            x, y = (c - crop // 2 for c in centre)
            clip = Path(tmp) / f"{Path(name).stem}.mp4"
            _pan_clip(clip, read_rgb(EVAL / "Set14" / name), crf)
            lr = _frame(clip, MIDDLE)[y : y + crop, x : x + crop]
            row = [_nearest(lr, scale), imresize_np(lr, scale)]
            source, (left, top) = clip, (0, 0)
            if margin is not None:
                left, top = (max(0, c - margin) // 2 * 2 for c in (x, y))
                source = _region_clip(clip, Path(tmp) / f"{clip.stem}.region.mkv", left, top, crop + 2 * margin + 2)
            for model in models:
                output = Path(tmp) / f"{clip.stem}.{Path(model).stem}.mkv"
                result = upscale_video(source, output, model=model, device="cpu", precision="fp32", encoder="ffv1",
                                       pix_fmt="yuv444p", progress=False)
                up = _frame(result, MIDDLE)
                dx, dy = x - left, y - top
                row.append(up[scale * dy : scale * (dy + crop), scale * dx : scale * (dx + crop)])
            rows.append(row)
    side = TILE
    sheet = Image.new("RGB", (side * len(labels), side * len(rows)))
    for row_index, row in enumerate(rows):
        for column, (rgb, label) in enumerate(zip(row, labels, strict=True)):
            sheet.paste(_labelled(np.ascontiguousarray(rgb), label), (column * side, row_index * side))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["srvgg-x2", "srvgg-x2-video"])
    parser.add_argument("--crf", type=int, default=28)
    parser.add_argument("--image", type=Path, help="write the crop sheet here")
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument("--scale", type=int, default=2, help="the models' scale (default 2)")
    parser.add_argument("--margin", type=int, help="upscale only the crop and this many input pixels around it "
                        "(for models too slow for whole frames on the CPU; default: whole frames)")
    args = parser.parse_args()
    if not args.no_table:
        quality_table(args.models, args.crf, [EVAL / "Set5", EVAL / "Set14"], args.scale)
    if args.image:
        crop_sheet(args.models, args.crf, args.image, args.scale, args.margin)


if __name__ == "__main__":
    main()
