"""ModelDescriptor (what the engine needs to run a network) and ArchSpec (how an architecture is built,
recognised in a state dict and given its hyper-parameters from tensor shapes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

StateDict = dict[str, torch.Tensor]

# Side of the square input used to count MACs; large enough that border effects do not matter.
_PROBE_SIZE = 24


@dataclass
class ModelDescriptor:
    """A ready-to-run network plus the facts the engine needs about it."""

    model: nn.Module
    arch: str
    scale: int
    in_channels: int
    out_channels: int
    color: Literal["y", "rgb"]
    supports_fp16: bool = True
    supports_bf16: bool = True
    size_multiple: int = 1  # input height and width must be multiples of this (padded and cropped around it)
    size_min: int = 0  # ... and at least this
    size_square: bool = False  # ... and equal
    hyperparams: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    purpose: Literal["SR", "Restoration"] = "SR"
    tiling: Literal["supported", "discouraged", "internal"] = "supported"  # whether tiles change the result
    source: Literal["vidsr", "spandrel", "ncnn"] = "vidsr"  # which code built the network
    # Y models trained here see studio-range luma (16-235, the MATLAB protocol); third-party grey models were
    # trained on plain grey images, so they see full-range luma.
    luma_range: Literal["limited", "full"] = "limited"
    licence: str | None = None  # a hint where the architecture's licence restricts use

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp32",) + ("fp16",) * self.supports_fp16 + ("bf16",) * self.supports_bf16

    def padding(self, width: int, height: int) -> tuple[int, int]:
        """(right, bottom) padding that makes a width x height input meet the size requirements."""
        padded_w, padded_h = (-(-max(side, self.size_min) // self.size_multiple) * self.size_multiple
                              for side in (width, height))
        if self.size_square:
            padded_w = padded_h = max(padded_w, padded_h)
        return padded_w - width, padded_h - height

    @property
    def run_channels(self) -> int:
        """The channels `run` takes: an RGBA model gets its opaque alpha from `run`."""
        return 3 if self.in_channels == 4 else self.in_channels

    def run(self, x: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The network (`self.model`, or a compiled form of it) on (N,C,H,W): padded to the size requirements
        and cropped back, RGBA models given opaque alpha and their alpha output dropped."""
        height, width = x.shape[-2:]
        x = pad_to(x, *self.padding(width, height))
        if self.in_channels == 4:  # the colour is run opaque; a picture's alpha is resampled apart
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        y = (network or self.model)(x)
        return y[:, :3 if self.out_channels == 4 else None, : height * self.scale, : width * self.scale]

    def gmacs(self, width: int = 1920, height: int = 1080) -> float:
        """GMACs (multiply-accumulates / 1e9, convolutions and linear layers) for one output frame of
        width x height pixels."""
        side = _PROBE_SIZE + self.padding(_PROBE_SIZE, _PROBE_SIZE)[0]
        macs = count_conv_macs(self.model, torch.zeros(1, self.in_channels, side, side))
        output_pixels = (side * self.scale) ** 2
        return macs * (width * height) / output_pixels / 1e9


def pad_to(x: torch.Tensor, right: int, bottom: int) -> torch.Tensor:
    """Pad (N,C,H,W) on the right and bottom: mirrored where the picture is large enough (as spandrel pads, so
    outputs match its own), the rest by repeating the edge."""
    if not (right or bottom):
        return x
    reflect_right, reflect_bottom = min(right, x.shape[-1] - 1), min(bottom, x.shape[-2] - 1)
    x = F.pad(x, (0, reflect_right, 0, reflect_bottom), mode="reflect")
    return F.pad(x, (0, right - reflect_right, 0, bottom - reflect_bottom), mode="replicate")


def count_conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of all convolutions and linear layers during one forward pass on `x` (other ops are negligible)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            # each input pixel is scattered through the full kernel to every output channel
            kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += inputs[0].numel() * kernel
        elif isinstance(module, nn.Conv2d):
            kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += output.numel() * kernel
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles += [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    training = model.training  # a model being trained (save_checkpoint during a run) stays in training mode
    try:
        with torch.no_grad():
            model.eval()(x.to(next(model.parameters())))  # same device and dtype as the weights
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return total


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: how to build it and how to recognise and read its checkpoints.

    - `signatures`: key sets, one per checkpoint layout only vidsr writes; a state dict matches when it has every
      key of one. Community layouts (ESRGAN, Compact) have none here: spandrel reads those.
    - `infer(state_dict)` returns (hyper-parameters read from tensor shapes, state dict in this module's layout).
    - `build(hyperparams)` returns a descriptor with a freshly initialised model.
    """

    name: str
    signatures: tuple[tuple[str, ...], ...]
    infer: Callable[[Mapping[str, torch.Tensor]], tuple[dict[str, Any], StateDict]]
    build: Callable[..., ModelDescriptor]
    description: str = ""

    def matches(self, keys: set[str]) -> bool:
        return any(all(k in keys for k in signature) for signature in self.signatures)


def conv(in_ch: int, out_ch: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution (odd kernel, padding kernel // 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)


def count_indexed(state_dict: Mapping[str, torch.Tensor], prefix: str, suffix: str) -> int:
    """Number of consecutive indices i = 0, 1, ... for which `prefix{i}suffix` is a key."""
    n = 0
    while f"{prefix}{n}{suffix}" in state_dict:
        n += 1
    return n


def scale_from_shuffle(out_channels_times_r2: int, channels: int) -> int:
    """Pixel-shuffle factor r from a conv's output channel count `channels * r^2`."""
    r = round((out_channels_times_r2 / channels) ** 0.5)
    if r * r * channels != out_channels_times_r2:
        raise ValueError(f"{out_channels_times_r2} output channels is not {channels} x r^2")
    return r


def color_of(channels: int) -> Literal["y", "rgb"]:
    return "y" if channels == 1 else "rgb"


def describe(model: nn.Module, arch: str, hyperparams: dict[str, Any], in_channels: int,
             out_channels: int | None = None, size_multiple: int = 1) -> ModelDescriptor:
    """Descriptor of a freshly built model; `hyperparams` must contain its `scale`."""
    out_channels = in_channels if out_channels is None else out_channels
    return ModelDescriptor(
        model=model, arch=arch, scale=int(hyperparams["scale"]), in_channels=in_channels,
        out_channels=out_channels, color=color_of(out_channels), size_multiple=size_multiple,
        hyperparams=dict(hyperparams),
    )


def upsample_input(x: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """Interpolated input for global residuals / pre-upsampling networks."""
    align = False if mode in ("bilinear", "bicubic") else None
    return nn.functional.interpolate(x, scale_factor=scale, mode=mode, align_corners=align)
