"""Training losses: pixel, VGG19 perceptual, adversarial (standard and relativistic average), FFT, MS-SSIM.

Images are `(N, C, H, W)` in [0, 1]; C = 1 (luma) is repeated to three channels where VGG needs RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidsr.errors import ModelError
from vidsr.models.checkpoint import load_checkpoint

# torchvision's VGG19 `features` layout: conv widths per block, a 2x2 max pool after each block.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ADVERSARIAL_KINDS = ("standard", "relativistic")


def vgg19_layer_names() -> list[str]:
    """Names of the modules of torchvision's `vgg19().features`, in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, widths in enumerate(VGG19_BLOCKS, start=1):
        for index in range(1, len(widths) + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return names


class VGG19Features(nn.Module):
    """VGG19 convolutional trunk whose state dict keys match torchvision's (`features.N.weight`).

    Only the layers up to the deepest requested one are built. `forward` returns the requested
    activations by name; `convX_Y` is the output before its ReLU (ESRGAN), `reluX_Y` after it (SRGAN).
    """

    def __init__(self, layers: list[str]) -> None:
        super().__init__()
        names = vgg19_layer_names()
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; use names like conv5_4 or relu2_2")
        self.layers = list(layers)
        depth = max(names.index(name) for name in layers) + 1
        self.names = names[:depth]
        self.features = nn.Sequential(*self._build(depth))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _build(depth: int) -> list[nn.Module]:
        modules: list[nn.Module] = []
        channels = 3
        for widths in VGG19_BLOCKS:
            for width in widths:
                modules += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
                channels = width
            modules.append(nn.MaxPool2d(2, 2))
        return modules[:depth]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = (x - self.mean) / self.std
        outputs = {}
        for name, module in zip(self.names, self.features, strict=True):
            x = module(x)
            if name in self.layers:
                outputs[name] = x
        return outputs


def load_vgg19_weights(model: VGG19Features, path: str | Path | None) -> None:
    """Load torchvision VGG19 weights (`vgg19-dcbb9e9d.pth` or a safetensors copy); classifier keys ignored."""
    if path is None:
        raise ModelError(
            "the perceptual (VGG) loss needs pretrained VGG19 weights: pass --vgg-weights PATH "
            "(torchvision vgg19 state dict), or set its weight to 0 and use the FFT / MS-SSIM losses"
        )
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"VGG19 weights not found: {path}")
    state, _ = load_checkpoint(path)
    wanted = model.state_dict()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise ModelError(f"{path} is not a torchvision VGG19 state dict (missing {missing[0]})")
    try:
        model.load_state_dict({key: state[key] for key in wanted})
    except RuntimeError as exc:
        raise ModelError(f"{path} does not match VGG19: {str(exc).splitlines()[-1].strip()}") from exc


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG19 features; ESRGAN default: conv5_4, before the activation."""

    def __init__(self, weights_path: str | Path | None, layer_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights or {"conv5_4": 1.0})
        self.vgg = VGG19Features(list(self.layer_weights))
        load_vgg19_weights(self.vgg, weights_path)
        self.vgg.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # a fixed feature extractor
        return self

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        fake = self.vgg(output)
        with torch.no_grad():
            real = self.vgg(target)
        return sum(weight * F.l1_loss(fake[name], real[name]) for name, weight in self.layer_weights.items())


# ---------------------------------------------------------------------------------------------- adversarial
def _bce(logits: Tensor, is_real: bool) -> Tensor:
    target = torch.ones_like(logits) if is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "relativistic") -> Tensor:
    """Discriminator loss. `relativistic` (ESRGAN's RaGAN) judges each sample against the other set's mean:

    L_D = (BCE(C(x_r) - E[C(x_f)], 1) + BCE(C(x_f) - E[C(x_r)], 0)) / 2
    The halving follows ESRGAN's reference training code, which its 5e-3 adversarial weight was tuned with.
    """
    if kind == "standard":
        return _bce(real_logits, True) + _bce(fake_logits, False)
    _check_kind(kind)
    return (_bce(real_logits - fake_logits.mean(), True) + _bce(fake_logits - real_logits.mean(), False)) / 2


def generator_adversarial_loss(real_logits: Tensor | None, fake_logits: Tensor, kind: str = "relativistic") -> Tensor:
    """Generator loss: standard `BCE(C(x_f), 1)` (real_logits unused, may be None); relativistic is the
    discriminator loss with labels swapped, so the generator also gains from real images looking less real
    (pass real_logits detached)."""
    if kind == "standard":
        return _bce(fake_logits, True)
    _check_kind(kind)
    if real_logits is None:
        raise ValueError("the relativistic generator loss needs the discriminator's logits on real images")
    return (_bce(real_logits - fake_logits.mean(), False) + _bce(fake_logits - real_logits.mean(), True)) / 2


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"unknown adversarial loss {kind!r}; choose from {', '.join(ADVERSARIAL_KINDS)}")


# ---------------------------------------------------------------------------------------------- no-VGG signals
def fft_loss(output: Tensor, target: Tensor) -> Tensor:
    """L1 distance between orthonormal 2-D spectra (real and imaginary parts): weighs all frequencies alike,
    so unlike L1 in pixel space it keeps pushing on the weak high-frequency detail."""
    spectrum = torch.fft.rfft2(output.float(), norm="ortho")
    reference = torch.fft.rfft2(target.float(), norm="ortho")
    return F.l1_loss(torch.view_as_real(spectrum), torch.view_as_real(reference))


def fft_amplitude_loss(output: Tensor, target: Tensor) -> Tensor:
    """L1 distance between amplitude spectra, blind to phase: it asks for the target's amount of detail at each
    frequency without asking for it at the exact position, which is what a perceptual loss should reward
    (measured in docs/PERCEPTUAL.md: it prefers misplaced detail over blur, where L1 and `fft_loss` do not)."""
    spectrum = torch.fft.rfft2(output.float(), norm="ortho").abs()
    return F.l1_loss(spectrum, torch.fft.rfft2(target.float(), norm="ortho").abs())


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    taps = torch.exp(-0.5 * ((torch.arange(size, dtype=like.dtype, device=like.device) - size // 2) / sigma) ** 2)
    taps = taps / taps.sum()
    return torch.outer(taps, taps).expand(channels, 1, size, size)


def _ssim_terms(x: Tensor, y: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term per image (valid convolution, data range 1)."""
    c1, c2 = 0.01**2, 0.03**2
    channels = x.shape[1]

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(output: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Multi-scale SSIM (Wang et al. 2003) with as many of its five scales as the image size allows;
    the weights of the scales used are renormalised to sum to one."""
    x, y = output.float(), target.float()
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) // 2**levels >= window_size:
        levels += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], device=x.device)
    weights = weights / weights.sum()
    window = _gaussian_window(min(window_size, *x.shape[-2:]), sigma, x.shape[1], x)
    factors = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window)
        # clamping keeps the fractional powers real when a tiny scale decorrelates completely
        factors.append((ssim if level == levels - 1 else cs).clamp_min(1e-6))
        if level < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(factors, dim=1) ** weights, dim=1).mean()


def ms_ssim_loss(output: Tensor, target: Tensor) -> Tensor:
    return 1 - ms_ssim(output, target)


def artifact_map(target: Tensor, output: Tensor, ema_output: Tensor, window: int = 7) -> Tensor:
    """Where a GAN generator draws artefacts rather than detail (LDL, Liang et al. 2022, "Details or
    Artifacts"), as a per-pixel weight (N,1,H,W), no gradient.

    Artefacts (haloes, noise-like texture along edges) make the residual |target - output| vary sharply over a
    few pixels; detail the model gets roughly right does not. The weight is the residual's local variance over
    `window` x `window`, scaled per patch by the fifth root of its variance (so that patches full of artefacts
    weigh more), and zero wherever the current generator is closer to the target than the slowly averaged
    (EMA) one: that keeps the GAN's improvements and pushes back only what the stable model does better."""
    with torch.no_grad():
        residual = (target - output).abs().sum(dim=1, keepdim=True)
        ema_residual = (target - ema_output).abs().sum(dim=1, keepdim=True)
        pad = window // 2
        padded = F.pad(residual, (pad, pad, pad, pad), mode="reflect")
        mean = F.avg_pool2d(padded, window, stride=1)
        local_var = (F.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp(min=0)
        local_var = local_var * (window * window / (window * window - 1))  # unbiased, as a sample variance
        patch_var = residual.var(dim=(1, 2, 3), keepdim=True) ** 0.2
        return local_var * patch_var * (residual >= ema_residual)


def artifact_loss(target: Tensor, output: Tensor, ema_output: Tensor) -> Tensor:
    """L1 between output and target, weighted by `artifact_map`: pulls artefacts back towards the target."""
    weight = artifact_map(target, output, ema_output)
    return F.l1_loss(weight * output, weight * target)


class ContentLoss(nn.Module):
    """The weighted non-adversarial terms of the generator loss, returned by name for logging.

    ESRGAN's defaults are pixel 1e-2 and perceptual 1 (with the adversarial term at 5e-3, added by the GAN
    trainer); a zero weight switches a term off, so VGG weights are needed only when perceptual > 0.
    """

    def __init__(
        self,
        pixel_fn: Callable[[Tensor, Tensor], Tensor] = F.l1_loss,
        pixel: float = 1e-2,
        perceptual: float = 1.0,
        fft: float = 0.0,
        fft_amplitude: float = 0.0,
        ms_ssim: float = 0.0,
        vgg_weights: str | Path | None = None,
        vgg_layers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.pixel_fn = pixel_fn
        self.weights = {
            "pixel": pixel,
            "perceptual": perceptual,
            "fft": fft,
            "fft_amplitude": fft_amplitude,
            "ms_ssim": ms_ssim,
        }
        self.perceptual = PerceptualLoss(vgg_weights, vgg_layers) if perceptual > 0 else None

    def forward(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        functions = {
            "pixel": self.pixel_fn,
            "perceptual": self.perceptual,
            "fft": fft_loss,
            "fft_amplitude": fft_amplitude_loss,
            "ms_ssim": ms_ssim_loss,
        }
        return {name: weight * functions[name](output, target) for name, weight in self.weights.items() if weight > 0}
