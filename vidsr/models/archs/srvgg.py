"""SRVGGNetCompact (Real-ESRGAN's compact model): a plain stack of 3x3 convs with PReLU at low resolution, pixel
shuffle, plus a nearest (or bilinear) upscale of the input as residual. Key layout `body.N` (convs at even N, PReLU at
odd N), as in Real-ESRGAN's realesr-general / animevideo checkpoints."""

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
    describe,
    scale_from_shuffle,
    upsample_input,
)


class SRVGGNetCompact(nn.Module):
    def __init__(self, scale: int = 4, channels: int = 3, features: int = 64, convs: int = 16,
                 upsample: str = "nearest") -> None:
        super().__init__()
        self.scale = scale
        self.upsample = upsample
        layers: list[nn.Module] = [conv(channels, features, 3), nn.PReLU(features)]
        for _ in range(convs):
            layers += [conv(features, features, 3), nn.PReLU(features)]
        layers.append(conv(features, channels * scale * scale, 3))
        self.body = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x)) + upsample_input(x, self.scale, self.upsample)


def build(scale: int = 4, channels: int = 3, features: int = 64, convs: int = 16,
          upsample: str = "nearest") -> ModelDescriptor:
    hyperparams = {"scale": scale, "channels": channels, "features": features, "convs": convs,
                   "upsample": upsample}
    return describe(SRVGGNetCompact(**hyperparams), "srvgg", hyperparams, channels)


def infer(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], StateDict]:
    first = state_dict["body.0.weight"]
    conv_indices = sorted(int(key.split(".")[1]) for key, value in state_dict.items()
                          if key.startswith("body.") and key.endswith(".weight") and value.ndim == 4)
    channels = first.shape[1]
    hyperparams = {"channels": channels, "features": first.shape[0], "convs": len(conv_indices) - 2,
                   "scale": scale_from_shuffle(state_dict[f"body.{conv_indices[-1]}.weight"].shape[0], channels)}
    return hyperparams, dict(state_dict)


SPEC = ArchSpec(
    name="srvgg",
    signatures=(),  # third-party Compact files are spandrel's
    infer=infer,
    build=build,
    description="Real-ESRGAN SRVGGNetCompact (PReLU convs + pixel shuffle + upscaled-input residual)",
)
