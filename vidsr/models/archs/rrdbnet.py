"""RRDBNet (ESRGAN, Wang et al. 2018): residual-in-residual dense blocks (nf 64, gc 32, 23 blocks, residual scaling
0.2), two nearest-neighbour x2 upsamplings. Real-ESRGAN's x2plus / x1 variants pixel-unshuffle the input first
(detected from conv_first's input channels). Builds vidsr's own checkpoints (BasicSR key layout, `arch` in the
header); third-party ESRGAN files, in either key layout, load through spandrel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidsr.models.archs.base import ArchSpec, ModelDescriptor, StateDict, conv, count_indexed, describe

RESIDUAL_SCALE = 0.2
UNSHUFFLE_BY_SCALE = {4: 1, 2: 2, 1: 4}  # the network always upsamples x4


class ResidualDenseBlock(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for j in range(1, 5):
            setattr(self, f"conv{j}", conv(features + (j - 1) * growth, growth, 3))
        self.conv5 = conv(features + 4 * growth, features, 3)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for j in range(1, 5):
            outputs.append(self.lrelu(getattr(self, f"conv{j}")(torch.cat(outputs, 1))))
        return x + RESIDUAL_SCALE * self.conv5(torch.cat(outputs, 1))


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int = 3, features: int = 64,
                 growth: int = 32, blocks: int = 23) -> None:
        super().__init__()
        if scale not in UNSHUFFLE_BY_SCALE:
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
        self.unshuffle = UNSHUFFLE_BY_SCALE[scale]
        self.conv_first = conv(in_channels * self.unshuffle**2, features, 3)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = conv(features, features, 3)
        self.conv_up1 = conv(features, features, 3)
        self.conv_up2 = conv(features, features, 3)
        self.conv_hr = conv(features, features, 3)
        self.conv_last = conv(features, out_channels, 3)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        features = self.lrelu(self.conv_up1(F.interpolate(features, scale_factor=2, mode="nearest")))
        features = self.lrelu(self.conv_up2(F.interpolate(features, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(features)))


def build(scale: int = 4, in_channels: int = 3, out_channels: int = 3, features: int = 64, growth: int = 32,
          blocks: int = 23) -> ModelDescriptor:
    hyperparams = {"scale": scale, "in_channels": in_channels, "out_channels": out_channels, "features": features,
                   "growth": growth, "blocks": blocks}
    model = RRDBNet(**hyperparams)
    return describe(model, "rrdbnet", hyperparams, in_channels, out_channels, size_multiple=model.unshuffle)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first, last = state_dict["conv_first.weight"], state_dict["conv_last.weight"]
    out_channels = last.shape[0]
    unshuffle_squared = first.shape[1] // out_channels
    scale = {unshuffle**2: s for s, unshuffle in UNSHUFFLE_BY_SCALE.items()}.get(unshuffle_squared)
    if scale is None:
        raise ValueError(f"conv_first takes {first.shape[1]} channels, not {out_channels} x 1, 4 or 16")
    hyperparams = {"scale": scale, "in_channels": first.shape[1] // unshuffle_squared, "out_channels": out_channels,
                   "features": first.shape[0], "growth": state_dict["body.0.rdb1.conv1.weight"].shape[0],
                   "blocks": count_indexed(state_dict, "body.", ".rdb1.conv1.weight")}
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="rrdbnet",
    signatures=(),  # third-party ESRGAN files (old and new key layouts) are spandrel's
    infer=infer,
    build=build,
    description="ESRGAN RRDBNet (x4; x2/x1 via pixel unshuffle as in Real-ESRGAN)",
)
