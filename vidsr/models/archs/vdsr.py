"""VDSR (Kim et al. 2016): 20 3x3 x64 convolutions without bias on the bicubically upscaled image, predicting the
residual. Key layout `input / residual_layer.N.conv / output` as in the common PyTorch re-implementation. VDSR is
multi-scale, so the scale comes from metadata (default 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidsr.models.archs.base import ArchSpec, ModelDescriptor, StateDict, conv, count_indexed, describe, upsample_input


class ConvReLU(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = conv(features, features, 3, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class VDSR(nn.Module):
    def __init__(self, scale: int = 3, channels: int = 1, features: int = 64, depth: int = 20) -> None:
        super().__init__()
        self.scale = scale
        self.input = conv(channels, features, 3, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.residual_layer = nn.Sequential(*(ConvReLU(features) for _ in range(depth - 2)))
        self.output = conv(features, channels, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = upsample_input(x, self.scale, "bicubic")
        return self.output(self.residual_layer(self.relu(self.input(up)))) + up


def build(scale: int = 3, channels: int = 1, features: int = 64, depth: int = 20) -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "features": features, "depth": depth}
    return describe(VDSR(**hyperparams), "vdsr", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first = state_dict["input.weight"]
    depth = count_indexed(state_dict, "residual_layer.", ".conv.weight") + 2
    return {"channels": first.shape[1], "features": first.shape[0], "depth": depth}, dict(state_dict)


SPEC = ArchSpec(
    name="vdsr",
    signatures=(("input.weight", "residual_layer.0.conv.weight", "output.weight"),),
    infer=infer,
    build=build,
    description="VDSR: 20-layer residual CNN on the bicubically upscaled image",
)
