"""SRCNN (Dong et al. 2014), 9-5-5 variant: three convolutions on the bicubically pre-upscaled image. Y-only by
default. Key layout `conv1/conv2/conv3` as in the common PyTorch re-implementations; their checkpoints do not
record the scale, so it comes from the file's metadata (default 3, the paper's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidsr.models.archs.base import ArchSpec, ModelDescriptor, StateDict, conv, describe, upsample_input


class SRCNN(nn.Module):
    def __init__(self, scale: int = 3, channels: int = 1, features: int = 64, mid_features: int = 32,
                 mid_kernel: int = 5) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = conv(channels, features, 9)
        self.conv2 = conv(features, mid_features, mid_kernel)
        self.conv3 = conv(mid_features, channels, 5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample_input(x, self.scale, "bicubic")
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


def build(scale: int = 3, channels: int = 1, features: int = 64, mid_features: int = 32,
          mid_kernel: int = 5) -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "features": features, "mid_features": mid_features,
                   "mid_kernel": mid_kernel}
    return describe(SRCNN(**hyperparams), "srcnn", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first, middle = state_dict["conv1.weight"], state_dict["conv2.weight"]
    hyperparams = {"channels": first.shape[1], "features": first.shape[0], "mid_features": middle.shape[0],
                   "mid_kernel": middle.shape[-1]}
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="srcnn",
    signatures=(("conv1.weight", "conv2.weight", "conv3.weight"),),
    infer=infer,
    build=build,
    description="SRCNN 9-5-5 on the bicubically upscaled image",
)
