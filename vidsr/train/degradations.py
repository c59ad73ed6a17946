"""Real-ESRGAN second-order degradation model, extended with real video-codec compression.

Every function takes images as float tensors in [0, 1], `(C, H, W)` with C = 1 (luma) or 3 (RGB), and draws
its randomness from a `numpy.random.Generator`, so one seed reproduces a training pair exactly.
`degrade(gt, scale, config, rng)` runs the whole chain: blur -> random resize -> noise -> JPEG, twice, then
the resize back to the LR size with a final sinc filter, and optionally a libx264 / libx265 round trip.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field, fields, is_dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from vidsr.quality.resize import imresize

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
DECODERS = {"libx264": "h264", "libx265": "hevc"}
CODEC_BLOCK = 16
X265_MIN_SIDE = 96


# ---------------------------------------------------------------------------------------------- configuration
@dataclass
class BlurConfig:
    prob: float = 1.0
    kernel_probs: dict[str, float] = field(
        default_factory=lambda: dict(zip(KERNEL_TYPES, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), strict=True))
    )
    size_range: tuple[int, int] = (7, 21)
    sigma_range: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1


@dataclass
class ResizeConfig:
    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    scale_range: tuple[float, float] = (0.15, 1.5)
    modes: tuple[str, ...] = RESIZE_MODES


@dataclass
class NoiseConfig:
    gaussian_prob: float = 0.5  # otherwise Poisson
    sigma_range: tuple[float, float] = (1.0, 30.0)  # in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass
class JpegConfig:
    prob: float = 1.0
    quality_range: tuple[int, int] = (30, 95)


@dataclass
class StageConfig:
    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


def _second_stage() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma_range=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), scale_range=(0.3, 1.2)),
        noise=NoiseConfig(sigma_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5)),
    )


@dataclass
class SincConfig:
    prob: float = 0.8
    size_range: tuple[int, int] = (7, 21)
    cutoff_range: tuple[float, float] = (math.pi / 3, math.pi)


@dataclass
class CodecConfig:
    """A short clip with synthetic camera motion around the LR frame, encoded and decoded with a real codec.

    The target frame sits at a random position in a GOP of random length, so it is coded as an I, P or B
    frame with motion-compensated prediction from its shifted neighbours.
    """

    prob: float = 0.0
    codecs: tuple[str, ...] = ("libx264", "libx265")
    crf_range: tuple[int, int] = (18, 38)
    gop_range: tuple[int, int] = (4, 16)
    bframes_range: tuple[int, int] = (0, 3)
    frames_range: tuple[int, int] = (3, 7)
    max_shift: int = 2  # pixels per frame
    preset: str = "veryfast"


@dataclass
class SharpenConfig:
    """Unsharp mask applied to the ground truth (Real-ESRGAN's "USM GT")."""

    enabled: bool = False
    weight: float = 0.5
    radius: int = 50
    threshold: float = 10.0  # in 8-bit levels


@dataclass
class DegradationConfig:
    """Defaults are Real-ESRGAN's x4 settings; `video()` adds the codec round trip for compressed video."""

    first: StageConfig = field(default_factory=StageConfig)
    second: StageConfig = field(default_factory=_second_stage)
    second_prob: float = 1.0
    # share of pairs whose input is the plain MATLAB-bicubic downscale: keeps clean sources (the eval's
    # protocol) sharp instead of treating their detail as noise; no random draw when 0, so the pairs are
    # those made before the setting existed
    clean_prob: float = 0.0
    final_sinc: SincConfig = field(default_factory=SincConfig)
    final_resize_modes: tuple[str, ...] = RESIZE_MODES
    codec: CodecConfig = field(default_factory=CodecConfig)
    sharpen_gt: SharpenConfig = field(default_factory=SharpenConfig)

    @classmethod
    def video(cls) -> DegradationConfig:
        return cls(codec=CodecConfig(prob=0.6), sharpen_gt=SharpenConfig(enabled=True))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: DegradationConfig | None = None) -> DegradationConfig:
        """Build from nested plain values (TOML / JSON); what they do not give is taken from `base` (or defaults)."""
        return _merge(copy.deepcopy(base) if base else cls(), values)


def _merge(obj: Any, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(obj)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown degradation settings: {', '.join(sorted(unknown))}")
    for name, value in values.items():
        current = getattr(obj, name)
        if is_dataclass(current):
            _merge(current, value)
        else:
            setattr(obj, name, tuple(value) if isinstance(current, tuple) else value)
    return obj


# ---------------------------------------------------------------------------------------------- kernels
def _grid(size: int) -> np.ndarray:
    axis = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx, yy], axis=-1)


def covariance(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Covariance of a Gaussian with standard deviations sigma_x / sigma_y along axes rotated by theta."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T


def _mahalanobis(size: int, cov: np.ndarray) -> np.ndarray:
    grid = _grid(size)
    return np.einsum("hwi,ij,hwj->hw", grid, np.linalg.inv(cov), grid)


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(size: int, cov: np.ndarray) -> np.ndarray:
    return _normalised(np.exp(-0.5 * _mahalanobis(size, cov)))


def generalized_gaussian_kernel(size: int, cov: np.ndarray, beta: float) -> np.ndarray:
    """beta < 1 gives heavier tails than a Gaussian, beta > 1 a flatter top (Real-ESRGAN eq. 3)."""
    return _normalised(np.exp(-0.5 * _mahalanobis(size, cov) ** beta))


def plateau_kernel(size: int, cov: np.ndarray, beta: float) -> np.ndarray:
    """Flat-topped kernel 1 / (1 + d^beta) with d the Mahalanobis distance squared."""
    return _normalised(1.0 / (1.0 + _mahalanobis(size, cov) ** beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """2-D circular low-pass (Airy) kernel with angular cutoff frequency in (0, pi]: ringing and overshoot."""
    radius = torch.from_numpy(np.hypot(*np.moveaxis(_grid(size), -1, 0)))
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(radius == 0, torch.full_like(radius, cutoff**2 / (4 * math.pi)), kernel)
    return _normalised(kernel.numpy())


def _odd_size(size_range: tuple[int, int], rng: np.random.Generator) -> int:
    low, high = size_range
    return int(rng.choice(np.arange(low | 1, high + 1, 2)))


def random_blur_kernel(config: BlurConfig, rng: np.random.Generator) -> np.ndarray:
    """One kernel of a randomly chosen type (or a sinc kernel with `sinc_prob`), size odd in size_range."""
    size = _odd_size(config.size_range, rng)
    if rng.random() < config.sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5  # small kernels cannot hold low cutoffs
        return sinc_kernel(size, rng.uniform(low, math.pi))
    names = list(config.kernel_probs)
    probs = np.array([config.kernel_probs[n] for n in names], dtype=np.float64)
    kind = names[rng.choice(len(names), p=probs / probs.sum())]
    if kind not in KERNEL_TYPES:
        raise ValueError(f"unknown blur kernel {kind!r}; choose from {', '.join(KERNEL_TYPES)}")
    sigma_x = rng.uniform(*config.sigma_range)
    if kind.endswith("aniso"):
        cov = covariance(sigma_x, rng.uniform(*config.sigma_range), rng.uniform(-math.pi, math.pi))
    else:
        cov = covariance(sigma_x, sigma_x, 0.0)
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(size, cov, rng.uniform(*config.betag_range))
    if kind.startswith("plateau"):
        return plateau_kernel(size, cov, rng.uniform(*config.betap_range))
    return gaussian_kernel(size, cov)


# ---------------------------------------------------------------------------------------------- operations
def filter2d(img: Tensor, kernel: np.ndarray | Tensor) -> Tensor:
    """Convolve each channel of a `(C, H, W)` image with a 2-D kernel (odd sides), reflecting at the borders."""
    kernel = torch.as_tensor(kernel, dtype=img.dtype, device=img.device)
    pad_y, pad_x = (side // 2 for side in kernel.shape[-2:])
    mode = "reflect" if pad_y < img.shape[-2] and pad_x < img.shape[-1] else "replicate"
    padded = F.pad(img[None], (pad_x, pad_x, pad_y, pad_y), mode=mode)
    channels = img.shape[0]
    weight = kernel.flip(-1, -2).expand(channels, 1, *kernel.shape[-2:])
    return F.conv2d(padded, weight, groups=channels)[0]


def resize(img: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose from {', '.join(RESIZE_MODES)}")
    size = (max(1, size[0]), max(1, size[1]))
    align = None if mode == "area" else False
    return F.interpolate(img[None], size=size, mode=mode, align_corners=align)[0]


def random_resize(img: Tensor, base: tuple[int, int], config: ResizeConfig, rng: np.random.Generator) -> Tensor:
    """Resize to `base` times a factor drawn as up / down / keep, with a random interpolation."""
    direction = rng.choice(3, p=np.asarray(config.probs) / sum(config.probs))
    factor = (rng.uniform(1.0, config.scale_range[1]), rng.uniform(config.scale_range[0], 1.0), 1.0)[direction]
    size = (round(base[0] * factor), round(base[1] * factor))
    return resize(img, size, str(rng.choice(config.modes)))


def _luma(img: Tensor) -> Tensor:
    if img.shape[0] == 1:
        return img
    return 0.299 * img[0:1] + 0.587 * img[1:2] + 0.114 * img[2:3]


def gaussian_noise(img: Tensor, sigma: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """Add white Gaussian noise of `sigma` (0-1 scale); `gray` uses one noise field for all channels."""
    shape = (1, *img.shape[1:]) if gray else tuple(img.shape)
    noise = torch.from_numpy(rng.normal(0.0, sigma, size=shape)).to(img)
    return img + noise


def poisson_noise(img: Tensor, scale: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """Add shot noise: intensities counted in as many levels as the 8-bit image uses, scaled by `scale`."""
    source = _luma(img) if gray else img
    quantised = (source.clamp(0, 1) * 255).round() / 255
    levels = 2 ** math.ceil(math.log2(max(2, len(torch.unique(quantised)))))
    counts = rng.poisson(quantised.double().cpu().numpy() * levels)
    noise = torch.from_numpy(counts / levels).to(img) - quantised
    return img + noise * scale


def random_noise(img: Tensor, config: NoiseConfig, rng: np.random.Generator) -> Tensor:
    gray = rng.random() < config.gray_prob
    if rng.random() < config.gaussian_prob:
        return gaussian_noise(img, rng.uniform(*config.sigma_range) / 255, gray, rng)
    return poisson_noise(img, rng.uniform(*config.poisson_scale_range), gray, rng)


def _to_uint8(img: Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _from_uint8(array: np.ndarray, like: Tensor) -> Tensor:
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(like) / 255


def jpeg(img: Tensor, quality: int) -> Tensor:
    """JPEG round trip (libjpeg through Pillow, 4:2:0 for colour); output is quantised to 8 bits."""
    array = _to_uint8(img)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return _from_uint8(np.asarray(Image.open(buffer)), img)


def unsharp_mask(img: Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> Tensor:
    """Sharpen where the high-pass residual exceeds `threshold` 8-bit levels, with a soft mask."""
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # OpenCV's default sigma for this kernel size
    taps = np.exp(-0.5 * (np.arange(size) - size // 2) ** 2 / sigma**2)
    taps /= taps.sum()

    def blur(x: Tensor) -> Tensor:  # the Gaussian is separable: two 1-D passes, not a size x size kernel
        return filter2d(filter2d(x, taps[None]), taps[:, None])

    residual = img - blur(img)
    mask = (residual.abs() * 255 > threshold).to(img)
    soft_mask = blur(mask)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img


# ---------------------------------------------------------------------------------------------- video codec
def _clip_with_motion(img: Tensor, frames: int, target: int, velocity: tuple[int, int]) -> list[Tensor]:
    """Frames of a camera pan through `img`: frame `target` is `img` itself, the others shifted versions."""
    reach = max(abs(v) for v in velocity) * frames
    if reach == 0:
        return [img] * frames
    mode = "reflect" if reach < min(img.shape[-2:]) else "replicate"
    padded = F.pad(img[None], (reach, reach, reach, reach), mode=mode)[0]
    height, width = img.shape[-2:]
    clip = []
    for index in range(frames):
        dy, dx = ((index - target) * v for v in velocity)
        clip.append(padded[:, reach + dy : reach + dy + height, reach + dx : reach + dx + width])
    return clip


def _encoder(codec: str, width: int, height: int, crf: int, gop: int, bframes: int, preset: str) -> Any:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
    context.gop_size = gop
    options = {"crf": str(crf), "preset": preset}
    if codec == "libx265":
        options["x265-params"] = f"log-level=none:keyint={gop}:bframes={bframes}:pools=1:frame-threads=1"
    else:
        options.update(bframes=str(bframes), threads="1")
    context.options = options
    return context


def _encode(encoder: Any, frames: list[av.VideoFrame]) -> list[av.Packet]:
    packets = []
    for pts, frame in enumerate(frames):
        frame.pts = pts
        packets += encoder.encode(frame)
    return packets + encoder.encode(None)


def _to_yuv_frame(img: Tensor) -> av.VideoFrame:
    array = _to_uint8(img)
    if array.shape[-1] == 3:
        return av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
    # Luma models see the decoded Y plane directly: code it as Y with neutral chroma.
    height, width = array.shape[:2]
    planes = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    planes[:height] = array[..., 0]
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def _from_yuv_frame(frame: av.VideoFrame, like: Tensor) -> Tensor:
    if like.shape[0] == 3:
        return _from_uint8(frame.to_ndarray(format="rgb24"), like)
    return _from_uint8(frame.to_ndarray(format="yuv420p")[: frame.height], like)


def _coded_size(side: int, codec: str) -> int:
    """Whole 16x16 macroblocks (a codec pads to its block size internally anyway). x265 gets at least
    X265_MIN_SIDE: on smaller frames this build reads uninitialised memory (different bitstreams from run to
    run, and heap corruption on frames 48 pixels wide)."""
    coded = -(-side // CODEC_BLOCK) * CODEC_BLOCK
    return max(coded, X265_MIN_SIDE) if codec == "libx265" else coded


def codec_roundtrip(
    clip: list[Tensor], codec: str, crf: int, gop: int, bframes: int, preset: str = "veryfast"
) -> list[Tensor]:
    """Encode frames `(C, H, W)` with libx264 / libx265 in yuv420p and decode them again, in display order.

    Reproducible for a given input within one thread; parallel x265 encoders in threads of one process are
    not, so parallelise with processes.
    """
    if codec not in DECODERS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(DECODERS)}")
    height, width = clip[0].shape[-2:]
    coded_h, coded_w = _coded_size(height, codec), _coded_size(width, codec)
    frames = [
        _to_yuv_frame(F.pad(img[None], (0, coded_w - width, 0, coded_h - height), mode="replicate")[0]) for img in clip
    ]
    packets = _encode(_encoder(codec, coded_w, coded_h, crf, gop, bframes, preset), frames)
    decoder = av.CodecContext.create(DECODERS[codec], "r")
    decoded = [frame for packet in [*packets, None] for frame in decoder.decode(packet)]
    return [_from_yuv_frame(frame, clip[0])[:, :height, :width] for frame in decoded]


def random_codec(img: Tensor, config: CodecConfig, rng: np.random.Generator) -> Tensor:
    frames = int(rng.integers(config.frames_range[0], config.frames_range[1] + 1))
    target = int(rng.integers(frames))
    velocity = tuple(int(v) for v in rng.integers(-config.max_shift, config.max_shift + 1, size=2))
    codec = str(rng.choice(config.codecs))
    crf = int(rng.integers(config.crf_range[0], config.crf_range[1] + 1))
    gop = int(rng.integers(config.gop_range[0], config.gop_range[1] + 1))
    bframes = int(rng.integers(config.bframes_range[0], config.bframes_range[1] + 1))
    clip = _clip_with_motion(img, frames, target, velocity)
    return codec_roundtrip(clip, codec, crf, gop, bframes, config.preset)[target]


# ---------------------------------------------------------------------------------------------- the chain
def _random_jpeg(img: Tensor, config: JpegConfig, rng: np.random.Generator) -> Tensor:
    if rng.random() >= config.prob:
        return img
    return jpeg(img, int(rng.integers(config.quality_range[0], config.quality_range[1] + 1)))


def _blur_resize_noise(img: Tensor, base: tuple[int, int], config: StageConfig, rng: np.random.Generator) -> Tensor:
    if rng.random() < config.blur.prob:
        img = filter2d(img, random_blur_kernel(config.blur, rng))
    img = random_resize(img, base, config.resize, rng)
    return random_noise(img, config.noise, rng).clamp(0, 1)


def _final_resize_and_sinc(
    img: Tensor, size: tuple[int, int], config: DegradationConfig, rng: np.random.Generator
) -> Tensor:
    img = resize(img, size, str(rng.choice(config.final_resize_modes)))
    sinc = config.final_sinc
    if rng.random() < sinc.prob:
        img = filter2d(img, sinc_kernel(_odd_size(sinc.size_range, rng), rng.uniform(*sinc.cutoff_range)))
    return img


def degrade(gt: Tensor, scale: int, config: DegradationConfig, rng: np.random.Generator) -> Tensor:
    """Second-order degradation of a `(C, H, W)` ground truth into its `(C, H // scale, W // scale)` input.

    First stage: blur, resize, noise, JPEG. Second stage: blur, resize, noise, then the resize to the LR size
    with the final sinc filter and the second JPEG in random order. The result is quantised to 8 bits.
    With `clean_prob`, the input is instead the plain bicubic downscale.
    """
    return degraded_input(gt, scale, config, rng)[0]


def degraded_input(gt: Tensor, scale: int, config: DegradationConfig, rng: np.random.Generator) -> tuple[Tensor, bool]:
    """`degrade`'s input, and whether it is the plain bicubic downscale (drawn with `clean_prob`)."""
    if config.clean_prob and rng.random() < config.clean_prob:
        return bicubic_input(gt, scale), True
    return _degraded(gt, scale, config, rng), False


def bicubic_input(gt: Tensor, scale: int) -> Tensor:
    """The plain MATLAB-bicubic downscale, quantised to 8 bits: a clean pair's input."""
    return imresize(gt, size=(gt.shape[-2] // scale, gt.shape[-1] // scale), quantize=True)


def _degraded(gt: Tensor, scale: int, config: DegradationConfig, rng: np.random.Generator) -> Tensor:
    height, width = gt.shape[-2:]
    lr_size = (height // scale, width // scale)
    img = _blur_resize_noise(gt, (height, width), config.first, rng)
    img = _random_jpeg(img, config.first.jpeg, rng)
    if rng.random() < config.second_prob:
        img = _blur_resize_noise(img, lr_size, config.second, rng)
    if rng.random() < 0.5:
        img = _final_resize_and_sinc(img, lr_size, config, rng)
        img = _random_jpeg(img, config.second.jpeg, rng)
    else:
        img = _random_jpeg(img, config.second.jpeg, rng)
        img = _final_resize_and_sinc(img, lr_size, config, rng)
    if rng.random() < config.codec.prob:
        img = random_codec(img, config.codec, rng)
    return (img.clamp(0, 1) * 255).round() / 255


@dataclass
class DegradedPair:
    lr: Tensor
    gt: Tensor  # the target of pixel and perceptual losses (unsharp-masked when enabled)
    gt_plain: Tensor  # the unsharpened ground truth: what the discriminator sees as real
    clean: bool = False  # lr is the plain bicubic downscale (`clean_prob`), not the degradation chain's


def make_pair(hr: Tensor, scale: int, config: DegradationConfig, rng: np.random.Generator) -> DegradedPair:
    """A training pair: crop `hr` to a multiple of `scale`, sharpen it if configured, degrade it."""
    height, width = (size - size % scale for size in hr.shape[-2:])
    plain = hr[:, :height, :width]
    sharpen = config.sharpen_gt
    target = unsharp_mask(plain, sharpen.weight, sharpen.radius, sharpen.threshold) if sharpen.enabled else plain
    lr, clean = degraded_input(target, scale, config, rng)
    return DegradedPair(lr=lr, gt=target, gt_plain=plain, clean=clean)
