"""FSRCNN (Dong et al. 2016), FSRCNN(d, s, m): feature extraction 5x5 x d, shrinking 1x1 x s, m mapping 3x3 x s,
expanding 1x1 x d (PReLU after each), then a 9x9 transposed convolution with stride = scale. Y-only by default.
The stride is not stored in the weights, so the scale of a third-party checkpoint comes from metadata (default 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidsr.models.archs.base import ArchSpec, ModelDescriptor, StateDict, conv, count_indexed, describe


class FSRCNN(nn.Module):
    def __init__(self, scale: int = 2, channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.first_part = nn.Sequential(conv(channels, d, 5), nn.PReLU(d))
        layers: list[nn.Module] = [conv(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [conv(s, s, 3), nn.PReLU(s)]
        layers += [conv(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*layers)
        self.last_part = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


def build(scale: int = 2, channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "d": d, "s": s, "m": m}
    return describe(FSRCNN(**hyperparams), "fsrcnn", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first = state_dict["first_part.0.weight"]
    mid_layers = count_indexed(state_dict, "mid_part.", ".weight")  # conv and PReLU alternate
    hyperparams = {"channels": first.shape[1], "d": first.shape[0],
                   "s": state_dict["mid_part.0.weight"].shape[0], "m": mid_layers // 2 - 2}
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="fsrcnn",
    signatures=(("first_part.0.weight", "mid_part.0.weight", "last_part.weight"),),
    infer=infer,
    build=build,
    description="FSRCNN(d, s, m): low-resolution mapping + transposed-conv upsampling",
)
