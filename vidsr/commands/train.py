"""`vidsr train`: train a model from a TOML config, with command-line overrides.

A config with a `[gan]` table runs the GAN stage (`GANTrainer`) on top of the same trainer.
"""

from __future__ import annotations

import argparse
import json

from vidsr.commands import add_command, number_arg
from vidsr.train.config import RANGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "train", "train a super-resolution model (resumes from <out-dir>/state.pt)",
                         run)
    parser.add_argument("--config", help="TOML file with TrainConfig fields, plus a [gan] table for the GAN stage "
                        "(see configs/)")
    parser.add_argument("--arch", help="architecture (espcn, fsrcnn, srcnn, vdsr, srresnet, rrdbnet, srvgg)")
    parser.add_argument("--scale", type=number_arg(RANGES["scale"]))
    parser.add_argument("--hyperparams", type=json.loads, help='JSON, e.g. \'{"channels": 1}\'')
    parser.add_argument("--train-dir", dest="train_dirs", action="append", help="folder of HR images (repeatable)")
    parser.add_argument("--val-dir", help="HR images for validation PSNR (e.g. Set5)")
    parser.add_argument("--out-dir", help="run folder: state.pt, log.csv, plot.png, best/last.safetensors")
    parser.add_argument("--cache-dir", help="where to cache LR/HR pairs")
    parser.add_argument("--name", help="name stored in the exported weights")
    parser.add_argument("--init-from", help="start from these weights (tensors with matching shapes)")
    parser.add_argument("--iterations", type=number_arg(RANGES["iterations"]))
    parser.add_argument("--minutes", type=number_arg(RANGES["minutes"]),
                        help="time budget: the iteration count (and so the schedule) is fitted to the measured speed")
    parser.add_argument("--batch-size", type=number_arg(RANGES["batch_size"]))
    parser.add_argument("--patch-size", type=number_arg(RANGES["patch_size"]), help="LR patch side")
    parser.add_argument("--loss", choices=["l1", "mse", "charbonnier"])
    parser.add_argument("--lr", type=number_arg(RANGES["lr"]))
    parser.add_argument("--schedule", choices=["cosine", "step"])
    parser.add_argument("--ema-decay", type=number_arg(RANGES["ema_decay"]))
    parser.add_argument("--seed", type=number_arg(RANGES["seed"]))
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--numerics", choices=["auto", "fp32", "bf16"],
                        help="auto (default): bf16 autocast + channels-last where bf16 is native, else fp32")
    parser.add_argument("--threads", type=number_arg(RANGES["threads"]), help="torch CPU threads")
    parser.add_argument("--val-every", type=number_arg(RANGES["val_every"]))
    parser.add_argument("--log-every", type=number_arg(RANGES["log_every"]))
    parser.add_argument("--checkpoint-minutes", type=number_arg(RANGES["checkpoint_minutes"]))
    parser.add_argument("--vgg-weights", help="GAN stage: torchvision VGG19 state dict for the perceptual loss")
    parser.add_argument("--degradation-workers", type=number_arg(RANGES["degradation_workers"]),
                        help="GAN stage: processes degrading patches")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vidsr.train.gan import GANTrainer, load_gan_config
    from vidsr.train.trainer import Trainer

    skip = {"config", "func", "debug", "command", "no_progress"}
    overrides = {key: value for key, value in vars(args).items() if key not in skip}
    config, gan = load_gan_config(args.config, **overrides)
    trainer = Trainer(config) if gan is None else GANTrainer(config, gan)
    path = trainer.run(progress=not args.no_progress)
    print(f"exported {path} (best validation Y-PSNR {trainer.best_psnr:.3f} dB)")
    return 0

