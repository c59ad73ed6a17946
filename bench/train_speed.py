"""Training speed per configuration and numerics: iterations per second of one training step (forward,
backward, fused Adam) for the networks and losses of the GAN track, in fp32 and in bf16 autocast +
channels-last (what `numerics = "auto"` picks where bf16 is fast), on random tensors.

    python bench/train_speed.py --steps 5          # the CPU; add --device cuda on a GPU

Prints a markdown table for docs/PERCEPTUAL.md. On a shared machine the figures move with the load: run it on a
quiet one, or say so next to the figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vidsr.models.archs import create_model
from vidsr.train.discriminators import create_discriminator
from vidsr.train.losses import fft_amplitude_loss, ms_ssim_loss
from vidsr.train.trainer import Numerics, adam


def srvgg_x2() -> tuple[torch.nn.Module, tuple[int, ...], Callable]:
    """The real-world x2 video model: SRVGGNetCompact 64 x 16, 8 LR patches of 48 px, L1."""
    model = create_model("srvgg", scale=2, features=64, convs=16).model
    return model, (8, 3, 48, 48), lambda out: F.l1_loss(out, torch.zeros_like(out))


def srvgg_x2_video() -> tuple[torch.nn.Module, tuple[int, ...], Callable]:
    """The x2 video model's size (32 features x 8 convs, bilinear), 8 LR patches of 48 px, L1."""
    model = create_model("srvgg", scale=2, features=32, convs=8, upsample="bilinear").model
    return model, (8, 3, 48, 48), lambda out: F.l1_loss(out, torch.zeros_like(out))


def rrdbnet_6b_x4() -> tuple[torch.nn.Module, tuple[int, ...], Callable]:
    """ESRGAN-style x4 with 6 RRDB blocks (anime_6B's size), 4 LR patches of 32 px, L1."""
    model = create_model("rrdbnet", scale=4, blocks=6).model
    return model, (4, 3, 32, 32), lambda out: F.l1_loss(out, torch.zeros_like(out))


def unet_discriminator(features: int = 64) -> tuple[torch.nn.Module, tuple[int, ...], Callable]:
    """Real-ESRGAN's U-Net discriminator (spectral norm) on 8 HR patches of 96 px, standard GAN loss."""
    model = create_discriminator("unet", in_channels=3, num_features=features)
    return model, (8, 3, 96, 96), lambda logits: F.softplus(-logits).mean()


def content_losses() -> tuple[torch.nn.Module, tuple[int, ...], Callable]:
    """The losses standing in for VGG (amplitude spectrum + MS-SSIM) on 8 HR patches of 96 px, through an identity."""
    target = torch.rand(8, 3, 96, 96)
    return (torch.nn.Conv2d(3, 3, 1), (8, 3, 96, 96),
            lambda out: fft_amplitude_loss(out, target) + ms_ssim_loss(out.clamp(0, 1), target))


CONFIGS = {"SRVGG x2 64x16": srvgg_x2, "SRVGG x2 32x8 (x2 video)": srvgg_x2_video, "RRDBNet 6B x4": rrdbnet_6b_x4,
           "U-Net discriminator": unet_discriminator, "U-Net discriminator 32f": lambda: unet_discriminator(32),
           "amplitude + MS-SSIM losses": content_losses}


def iterations_per_second(build: Callable, numerics: Numerics, device: torch.device, steps: int) -> float:
    torch.manual_seed(0)
    model, shape, loss_fn = build()
    model = numerics.layout(model.to(device).train())
    optimizer = adam(model.parameters(), 1e-4, device)
    batch = numerics.layout(torch.rand(shape, device=device))
    times = []
    for _ in range(steps + 1):  # the first step allocates and picks kernels: not timed
        start = time.perf_counter()
        with numerics.autocast():
            output = model(batch)
        loss = loss_fn(output.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1 / min(times[1:])  # the fastest step: the least disturbed by other jobs on a shared machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default: 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to measure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"auto picks: {'bf16 + channels-last' if Numerics.choose('auto', device).bf16 else 'fp32'}")
    print("| configuration | fp32 it/s | bf16 + channels-last it/s | ratio |")
    print("|---|---|---|---|")
    for name in args.only or CONFIGS:
        fp32, bf16 = (iterations_per_second(CONFIGS[name], Numerics(device.type, bf16), device, args.steps)
                      for bf16 in (False, True))
        print(f"| {name} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
