"""SRResNet (Ledig et al. 2017): 16 residual blocks at low resolution, pixel-shuffle upsampling. Batch norm is
left out (as in BasicSR's MSRResNet, whose key layout this follows: `conv_first`, `body.N.conv1/conv2`, `upconv1/2`,
`conv_hr`, `conv_last`), and a bilinear upscale of the input is added as a global residual."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidsr.models.archs.base import (
    ArchSpec,
    ModelDescriptor,
    StateDict,
    conv,
    count_indexed,
    describe,
    scale_from_shuffle,
    upsample_input,
)


class ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = conv(features, features, 3)
        self.conv2 = conv(features, features, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class SRResNet(nn.Module):
    def __init__(self, scale: int = 4, channels: int = 3, features: int = 64, blocks: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"SRResNet supports scale 2, 3 or 4, not {scale}")
        self.scale = scale
        self.conv_first = conv(channels, features, 3)
        self.body = nn.Sequential(*(ResidualBlock(features) for _ in range(blocks)))
        first_factor = 3 if scale == 3 else 2
        self.upconv1 = conv(features, features * first_factor**2, 3)
        self.upconv2 = conv(features, features * 4, 3) if scale == 4 else None
        self.conv_hr = conv(features, features, 3)
        self.conv_last = conv(features, channels, 3)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        self.shuffle_first = nn.PixelShuffle(first_factor)
        self.shuffle_2 = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.lrelu(self.conv_first(x))
        out = self.body(features)
        out = self.lrelu(self.shuffle_first(self.upconv1(out)))
        if self.upconv2 is not None:
            out = self.lrelu(self.shuffle_2(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + upsample_input(x, self.scale, "bilinear")


def build(scale: int = 4, channels: int = 3, features: int = 64, blocks: int = 16) -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "features": features, "blocks": blocks}
    return describe(SRResNet(**hyperparams), "srresnet", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first = state_dict["conv_first.weight"]
    features = first.shape[0]
    factor = scale_from_shuffle(state_dict["upconv1.weight"].shape[0], features)
    scale = 4 if "upconv2.weight" in state_dict else factor
    hyperparams = {"channels": first.shape[1], "features": features, "scale": scale,
                   "blocks": count_indexed(state_dict, "body.", ".conv1.weight")}
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="srresnet",
    signatures=(("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight",
                 "conv_last.weight"),),
    infer=infer,
    build=build,
    description="SRResNet (MSRResNet layout, no batch norm)",
)
