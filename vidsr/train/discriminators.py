"""Discriminators for GAN fine-tuning: the SRGAN / ESRGAN VGG-style classifier (one logit per image) and
Real-ESRGAN's U-Net with spectral normalisation (one logit per pixel, so it judges local texture)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

LEAK = 0.2


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(LEAK, inplace=True),
    ]


class VGGDiscriminator(nn.Module):
    """ESRGAN's `discriminator_VGG_128` (SRGAN's design, 5 stride-2 stages): a fixed input size is needed
    for the dense head; `input_size` must be a multiple of 32 (128 in ESRGAN)."""

    def __init__(self, in_channels: int = 3, num_features: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"VGGDiscriminator input size must be a multiple of 32, got {input_size}")
        self.input_size = input_size
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_features, 3, 1, 1), nn.LeakyReLU(LEAK, inplace=True)]
        layers += _conv_bn(num_features, num_features, 4, 2)
        channels = num_features
        for width in (2, 4, 8, 8):
            layers += _conv_bn(channels, num_features * width, 3, 1)
            layers += _conv_bn(num_features * width, num_features * width, 4, 2)
            channels = num_features * width
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, 100), nn.LeakyReLU(LEAK, inplace=True), nn.Linear(100, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"VGGDiscriminator expects {self.input_size}x{self.input_size} patches, got {x.shape}")
        return self.classifier(self.features(x))


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator: three stride-2 encoders, three bilinear decoders with skip
    connections, spectral normalisation on every inner convolution; any input size divisible by 8."""

    def __init__(self, in_channels: int = 3, num_features: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        nf = num_features
        self.skip_connection = skip_connection
        self.conv_in = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(nf * 2**i, nf * 2 ** (i + 1), 4, 2, 1, bias=False)) for i in range(3)
        )
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(nf * 2 ** (i + 1), nf * 2**i, 3, 1, 1, bias=False)) for i in (2, 1, 0)
        )
        self.refine = nn.Sequential(
            spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False)),
            nn.LeakyReLU(LEAK, inplace=True),
            spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False)),
            nn.LeakyReLU(LEAK, inplace=True),
            nn.Conv2d(nf, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs sides divisible by 8, got {tuple(x.shape[-2:])}")
        skips = [F.leaky_relu(self.conv_in(x), LEAK)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), LEAK))
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.leaky_relu(conv(y), LEAK)
            skip = skips.pop()
            if self.skip_connection:
                y = y + skip
        return self.refine(y)


DISCRIMINATORS = {"vgg": VGGDiscriminator, "unet": UNetDiscriminatorSN}


def create_discriminator(kind: str, **kwargs: Any) -> nn.Module:
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r}; choose from {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[kind](**kwargs)
