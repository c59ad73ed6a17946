"""GAN fine-tuning, the second stage of the ESRGAN / Real-ESRGAN recipe, built on the supervised Trainer.

Stage 1 is `vidsr train` (PSNR-oriented, L1). Stage 2 (`init_from` = stage 1's weights) adds a
discriminator, a perceptual loss and an adversarial loss. Training pairs are the PSNR trainer's bicubic pairs
(ESRGAN) or, with a `degradation` setting, its HR patches degraded by the Real-ESRGAN chain (real-world models),
on the fly or from a pool of degraded pairs made once (`pool_size`, `vidsr.train.pool`). With `teachers` the
target is not the HR image but the teachers' output on the same input (distillation): two teachers give
ESRGAN's PSNR / GAN interpolation in output space, where interpolating the weights fails (docs/PERCEPTUAL.md);
with a discriminator, the teachers' outputs are its real images.
Everything else (data cache, patches, EMA, schedule, validation, exact resume, export) is the Trainer's.

    vidsr train --config configs/rrdbnet_x4_esrgan.toml --vgg-weights vgg19-dcbb9e9d.pth
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidsr.errors import InputError, ModelError
from vidsr.models.archs import ModelDescriptor, create_model, model_from_state_dict
from vidsr.models.checkpoint import load_checkpoint, save_checkpoint
from vidsr.train.config import TrainConfig, checked, config_from, read_toml
from vidsr.train.data import PatchSampler
from vidsr.train.degradations import DegradationConfig, DegradedPair, make_pair
from vidsr.train.discriminators import create_discriminator
from vidsr.train.losses import (
    ADVERSARIAL_KINDS,
    ContentLoss,
    artifact_loss,
    discriminator_loss,
    generator_adversarial_loss,
)
from vidsr.train.pool import PairPool, PoolSampler, worker_pool
from vidsr.train.teachers import input_tone, load_teacher, teacher_output
from vidsr.train.trainer import Trainer, adam, lr_factor, resolve_device

GAN_LOG_FIELDS = [
    "iteration",
    "pixel",
    "perceptual",
    "fft",
    "fft_amplitude",
    "ms_ssim",
    "artifacts",
    "adversarial",
    "d_loss",
    "d_real",
    "d_fake",
]
HEADER_KEYS = ("arch", "scale", "color", "hyperparams")  # written by save_checkpoint from the descriptor


@dataclass
class GANSettings:
    """The `[gan]` table of a training config. Defaults are ESRGAN's."""

    discriminator: str = "vgg"  # vgg (ESRGAN, needs HR patch side = 128 or another multiple of 32) | unet
    d_features: int = 64
    d_lr: float | None = None  # default: the generator's lr
    adversarial: str = "relativistic"  # relativistic (ESRGAN) | standard (SRGAN)
    pixel_weight: float = 1e-2
    perceptual_weight: float = 1.0
    adversarial_weight: float = 5e-3
    fft_weight: float = 0.0
    fft_amplitude_weight: float = 0.0
    ms_ssim_weight: float = 0.0
    artifact_weight: float = 0.0  # LDL's artefact loss (losses.artifact_loss) against the EMA generator; needs EMA
    vgg_weights: str | None = None  # torchvision vgg19 state dict; required when perceptual_weight > 0
    vgg_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})
    degradation: str | dict[str, Any] | None = None  # None: bicubic pairs; "realesrgan", "video" or a table
    degradation_workers: int = 0  # processes degrading patches or making pool shards (0: in the training process)
    pool_size: int = 0  # > 0: train from a window of this many degraded pairs made once and cached (vidsr.train.pool)
    pool_crop: int = 0  # HR side of a pool pair (0: twice the HR patch side, so patches are random crops of pairs)
    pool_refresh: float = 1.0  # pairs the window slides per iteration (new pairs made in the background)
    teachers: list[str] = field(default_factory=list)  # models whose output is the target (distillation)
    teacher_alpha: float = 0.5  # two teachers: the target is (1 - alpha) * first's output + alpha * second's
    teacher_on_clean: bool = True  # False (one teacher, a pool): clean bicubic pairs (clean_prob) keep the HR target
    teacher_tone: str = "teacher"  # input: targets keep the teacher's detail on the input's tone (teachers.input_tone)


def degradation_config(spec: str | dict[str, Any]) -> DegradationConfig:
    """`"realesrgan"`, `"video"`, or a table of overrides with an optional `preset` key (default realesrgan)."""
    values = {"preset": spec} if isinstance(spec, str) else dict(spec)
    preset = values.pop("preset", "realesrgan")
    presets = {"realesrgan": DegradationConfig, "video": DegradationConfig.video}
    if preset not in presets:
        raise InputError(f"unknown degradation preset {preset!r}; choose realesrgan or video")
    try:
        return DegradationConfig.from_dict(values, base=presets[preset]())
    except ValueError as exc:
        raise InputError(str(exc)) from None


def check_stage_one(config: TrainConfig, adversarial: bool, distilled: bool = False) -> ModelDescriptor:
    """The GAN stage fine-tunes a whole PSNR-trained model: `init_from` must hold one of the configured model.

    Without a discriminator (Real-ESRNet) it may hold the same network at another scale: the tensors that match
    are copied and the upsampling tail is trained anew, as `vidsr train` does."""
    if not config.init_from:
        if distilled and not adversarial:  # a teacher's output is the target: the student may start from scratch
            return create_model(config.arch, scale=config.scale, **config.hyperparams)
        raise InputError("GAN fine-tuning starts from PSNR-trained weights: set init_from (or --pretrained)")
    tensors, metadata = load_checkpoint(config.init_from)
    source = model_from_state_dict(tensors, metadata)
    wanted = create_model(config.arch, scale=config.scale, **config.hyperparams)
    ignored = set() if adversarial else {"scale"}
    if (source.arch, _without(source.hyperparams, ignored)) != (wanted.arch, _without(wanted.hyperparams, ignored)):
        raise ModelError(
            f"{config.init_from} is {source.arch} {source.hyperparams}, the config trains "
            f"{wanted.arch} {wanted.hyperparams}"
        )
    return source


def check_teacher(name: str, scale: int, student: ModelDescriptor) -> ModelDescriptor:
    """A distillation teacher: any model with the trained model's channels, at its scale or a larger one (whose
    output is resampled to the student's scale)."""
    teacher = load_teacher(name)
    channels = (teacher.in_channels, teacher.out_channels) == (student.in_channels, student.out_channels)
    if not channels or teacher.scale < scale:
        raise ModelError(f"teacher {name} is x{teacher.scale}, {teacher.in_channels} -> "
                         f"{teacher.out_channels} channels; the config trains x{scale}")
    return teacher


def _without(hyperparams: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {key: value for key, value in hyperparams.items() if key not in keys}


def _degrade_patch(hr: torch.Tensor, scale: int, config: DegradationConfig, seed: int) -> DegradedPair:
    return make_pair(hr, scale, config, np.random.default_rng(seed))


class DegradedSampler:
    """HR patches from the PSNR trainer's sampler, degraded on the fly into LR inputs.

    It shares the base sampler's generator, so the Trainer's saved `sampler_rng` covers the degradations too.
    Each patch gets its own seed drawn from it, so `workers` processes give the same batches as none
    (processes, not threads: parallel x265 encoders in one process are not reproducible). Workers start by
    forkserver, so a script that trains with workers needs the usual `if __name__ == "__main__":` guard.
    """

    def __init__(self, base: PatchSampler, config: DegradationConfig, workers: int) -> None:
        self.base = base
        self.rng = base.rng
        self.config = config
        self.pool = worker_pool(workers)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LR input, loss target, discriminator's real image): the target is unsharp-masked when configured."""
        _, hr = self.base.batch()
        seeds = [int(seed) for seed in self.rng.integers(0, 2**63, size=len(hr))]
        jobs = (list(hr), [self.base.cache.scale] * len(hr), [self.config] * len(hr), seeds)
        pairs = list(self.pool.map(_degrade_patch, *jobs) if self.pool else map(_degrade_patch, *jobs))
        return tuple(torch.stack([getattr(p, name) for p in pairs]) for name in ("lr", "gt", "gt_plain"))

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


class GANTrainer(Trainer):
    def __init__(self, config: TrainConfig, gan: GANSettings) -> None:
        self.gan = gan
        if gan.adversarial not in ADVERSARIAL_KINDS:
            raise InputError(f"unknown adversarial loss {gan.adversarial!r}; choose {' or '.join(ADVERSARIAL_KINDS)}")
        if gan.artifact_weight and config.ema_decay <= 0:
            raise InputError("artifact_weight compares with the EMA generator: set ema_decay above 0")
        if len(gan.teachers) > 2 or not 0 <= gan.teacher_alpha <= 1:
            raise InputError("teachers: one model, or two blended by teacher_alpha from 0 to 1")
        stage_one = check_stage_one(config, gan.adversarial_weight > 0, bool(gan.teachers))  # before the data cache
        teachers = [check_teacher(name, config.scale, stage_one) for name in gan.teachers]  # so are these
        device = resolve_device(config.device)
        torch.manual_seed(config.seed + 1)  # the discriminator's initialisation (spectral norm vectors too)
        self.discriminator = self._build_discriminator(config, stage_one.in_channels).to(device).train()
        self.d_optimizer = adam(self.discriminator.parameters(), gan.d_lr or config.lr, device, betas=(0.9, 0.99))
        self.d_scheduler = torch.optim.lr_scheduler.LambdaLR(self.d_optimizer, lambda it: lr_factor(config, it))
        self.gan_log_path = Path(config.out_dir) / "gan_log.csv"
        self._pending: list[dict[str, float]] = []
        super().__init__(config)  # generator, data, EMA; resumes from state.pt when there is one
        self.numerics.layout(self.discriminator)
        self.teacher_descriptors = teachers
        self.teachers = [self.numerics.layout(t.model.to(self.device).eval().requires_grad_(False)) for t in teachers]
        self.content_loss = ContentLoss(
            self.loss_fn,
            gan.pixel_weight,
            gan.perceptual_weight,
            gan.fft_weight,
            gan.fft_amplitude_weight,
            gan.ms_ssim_weight,
            gan.vgg_weights,
            gan.vgg_layers,
        ).to(self.device)
        if gan.degradation is not None:
            self.sampler = self._degraded_sampler(config, degradation_config(gan.degradation))

    def _degraded_sampler(self, config: TrainConfig, degradation: DegradationConfig) -> DegradedSampler | PoolSampler:
        """Patches degraded on the fly, or drawn from the pair pool; the pool's window follows the iteration."""
        gan, base = self.gan, self.sampler
        if not gan.pool_size:
            return DegradedSampler(base, degradation, gan.degradation_workers)
        crop = gan.pool_crop or 2 * config.patch_size * config.scale
        teacher = gan.teachers[0] if len(gan.teachers) == 1 else None  # one teacher: made with the pool, once
        pool = PairPool(base.cache, degradation, gan.pool_size, crop, config.seed,
                        config.cache_dir or self.out_dir / "cache", gan.degradation_workers, teacher,
                        gan.teacher_on_clean)
        return PoolSampler(pool, config.patch_size, config.batch_size, gan.pool_refresh, base.rng, self.iteration)

    @torch.no_grad()
    def _teach(self, lr: torch.Tensor) -> torch.Tensor:
        """The teachers' output on `lr`: the distillation target."""
        with self.numerics.autocast():
            outputs = [teacher_output(descriptor, lr, self.config.scale, network)
                       for descriptor, network in zip(self.teacher_descriptors, self.teachers, strict=True)]
        return outputs[0] if len(outputs) == 1 else torch.lerp(outputs[0], outputs[1], self.gan.teacher_alpha)

    def _build_discriminator(self, config: TrainConfig, channels: int) -> torch.nn.Module:
        kwargs: dict[str, Any] = {"in_channels": channels, "num_features": self.gan.d_features}
        if self.gan.discriminator == "vgg":
            kwargs["input_size"] = config.patch_size * config.scale
        try:
            return create_discriminator(self.gan.discriminator, **kwargs)
        except ValueError as exc:
            raise InputError(f"discriminator: {exc}") from None

    def run(self, progress: bool = True, until: int | None = None) -> Path:
        try:
            return super().run(progress, until)
        finally:
            if isinstance(self.sampler, DegradedSampler | PoolSampler):
                self.sampler.close()

    # ----- one iteration ----------------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.sampler.batch()
        batch = batch if len(batch) == 3 else (*batch, batch[1])
        lr, target, real = (t.to(self.device, non_blocking=True) for t in batch)
        if self.teachers:
            if not self._teacher_in_pool:
                target = self._teach(lr)
            if self.gan.teacher_tone == "input":
                target = input_tone(target, lr, self.config.scale)
            real = target  # distillation: the discriminator learns the teacher's pictures as the real ones
        return lr, target, real

    @property
    def _teacher_in_pool(self) -> bool:
        return isinstance(self.sampler, PoolSampler) and self.sampler.pool.maker.teacher is not None

    @property
    def adversarial(self) -> bool:
        """Adversarial weight 0 trains without the discriminator (Real-ESRNet: L1 on degraded pairs)."""
        return self.gan.adversarial_weight > 0

    def step(self) -> float:
        lr, target, real = self._batch()
        with self.numerics.autocast():
            output = self.model(self.numerics.layout(lr)).float()
        terms = self._generator_step(lr, output, target, real)
        row = {name: value.item() for name, value in terms.items()}
        if self.adversarial:
            row.update(self._discriminator_step(output.detach(), real))
            self.d_scheduler.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.iteration += 1
        self._log(row)
        return sum(terms.values()).item()

    def _generator_step(
        self, lr: torch.Tensor, output: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        terms = self.content_loss(output, target)
        if self.gan.artifact_weight:
            with torch.no_grad(), self.numerics.autocast():
                stable = self.ema.model(self.numerics.layout(lr)).float()
            terms["artifacts"] = self.gan.artifact_weight * artifact_loss(target, output, stable)
        if self.adversarial:
            kind = self.gan.adversarial
            self.discriminator.requires_grad_(False)
            real_logits = self._judge(real).detach() if kind == "relativistic" else None
            adversarial = generator_adversarial_loss(real_logits, self._judge(output), kind)
            terms["adversarial"] = self.gan.adversarial_weight * adversarial
        self.optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.optimizer.step()
        return terms

    def _judge(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's fp32 logits, computed with the trainer's numerics."""
        with self.numerics.autocast():
            return self.discriminator(self.numerics.layout(images)).float()

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        self.discriminator.requires_grad_(True)
        real_logits, fake_logits = self._judge(real), self._judge(fake)
        d_loss = discriminator_loss(real_logits, fake_logits, self.gan.adversarial)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        return {"d_loss": d_loss.item(), "d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item()}

    def _log(self, row: dict[str, float]) -> None:
        """Mean of each loss term over `log_every` iterations, one row in gan_log.csv."""
        self._pending.append(row)
        if self.iteration % self.config.log_every and self.iteration != self.config.iterations:
            return
        means = {name: np.mean([r[name] for r in self._pending]) for name in self._pending[0]}
        new_file = not self.gan_log_path.is_file()
        with self.gan_log_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=GAN_LOG_FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow({"iteration": self.iteration, **{k: f"{v:.6g}" for k, v in means.items()}})
        self._pending.clear()

    # ----- checkpoints ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "gan": asdict(self.gan),
            "discriminator": self.discriminator.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "d_scheduler": self.d_scheduler.state_dict(),
            "gan_pending": self._pending,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.d_scheduler.load_state_dict(state["d_scheduler"])
        self._pending = state["gan_pending"]
        self._truncate_gan_log()

    def _truncate_gan_log(self) -> None:
        if not self.gan_log_path.is_file():
            return
        with self.gan_log_path.open() as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= self.iteration]
        with self.gan_log_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=GAN_LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def export(self, path: Path, val_psnr: float | None = None) -> Path:
        """The Trainer's export, with the GAN stage's recipe added to the metadata."""
        path = super().export(path, val_psnr)
        _, metadata = load_checkpoint(path)
        extra = {key: value for key, value in metadata.items() if key not in HEADER_KEYS}
        settings = asdict(self.gan)
        settings["vgg_weights"] = Path(settings["vgg_weights"]).name if settings["vgg_weights"] else None
        extra["recipe"] = {**extra.get("recipe", {}), "stage": "gan", "gan": settings}
        return save_checkpoint(path, self.eval_model(), **extra)


# ---------------------------------------------------------------------------------------------- configuration
def load_gan_config(path: str | Path | None, **overrides: Any) -> tuple[TrainConfig, GANSettings | None]:
    """A TrainConfig TOML and its `[gan]` table (None without one: a PSNR-stage config); `overrides` (None
    ignored) go to whichever of the two has them."""
    values = read_toml(path)
    gan_values = values.pop("gan", None)
    if not isinstance(gan_values, dict | None):
        raise InputError(f"config {path}: gan must be a table, got {gan_values!r}")
    gan_names = {f.name for f in fields(GANSettings)}
    given = {key: value for key, value in overrides.items() if value is not None}
    gan_given = {key: value for key, value in given.items() if key in gan_names}
    if gan_values is None and gan_given:
        flags = " and ".join(f"--{key.replace('_', '-')}" for key in gan_given)
        raise InputError(f"{flags} only apply to a config with a [gan] table")
    config = config_from(values | {key: v for key, v in given.items() if key not in gan_names}, f"config {path}")
    if gan_values is None:
        return config, None
    unknown = sorted(set(gan_values) - gan_names)
    if unknown:
        raise InputError(f"unknown [gan] keys: {', '.join(unknown)}")
    return config, checked(GANSettings, gan_values | gan_given, f"config {path} [gan]")

