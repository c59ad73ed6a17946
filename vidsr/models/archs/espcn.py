"""ESPCN (Shi et al. 2016): conv 5x5 x64, conv 3x3 x32, conv 3x3 x (C r^2), pixel shuffle. All convolutions run at
low resolution, which makes it the cheapest network here. Y-only by default, as in the paper.

Key layout (`first_part.0/2`, `last_part.0`) follows the widely used PyTorch re-implementations, so their
checkpoints load as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidsr.models.archs.base import ArchSpec, ModelDescriptor, StateDict, conv, describe, scale_from_shuffle

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ESPCN(nn.Module):
    def __init__(
        self, scale: int = 2, channels: int = 1, features: int = 64, mid_features: int = 32, act: str = "tanh"
    ) -> None:
        super().__init__()
        activation = ACTIVATIONS[act]
        self.first_part = nn.Sequential(
            conv(channels, features, 5), activation(), conv(features, mid_features, 3), activation()
        )
        self.last_part = nn.Sequential(conv(mid_features, channels * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.first_part(x))


def build(
    scale: int = 2, channels: int = 1, features: int = 64, mid_features: int = 32, act: str = "tanh"
) -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "features": features, "mid_features": mid_features,
                   "act": act}
    return describe(ESPCN(**hyperparams), "espcn", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first = state_dict["first_part.0.weight"]
    channels = first.shape[1]
    hyperparams = {
        "channels": channels,
        "features": first.shape[0],
        "mid_features": state_dict["first_part.2.weight"].shape[0],
        "scale": scale_from_shuffle(state_dict["last_part.0.weight"].shape[0], channels),
    }
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="espcn",
    signatures=(("first_part.0.weight", "first_part.2.weight", "last_part.0.weight"),),
    infer=infer,
    build=build,
    description="ESPCN: 3 low-resolution convs + pixel shuffle (real-time tier)",
)
