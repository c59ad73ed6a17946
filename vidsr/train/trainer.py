"""Supervised SR training loop: Adam + cosine/step schedule, EMA weights, periodic validation with the standard
protocol, CSV log + PNG plot, and checkpoints that resume exactly (model, EMA, optimizer, schedule, RNG states)."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vidsr.compute.upscaler import cpu_has_native_bf16
from vidsr.errors import InputError
from vidsr.models.archs import ModelDescriptor, create_model
from vidsr.models.checkpoint import load_checkpoint, load_pickle, save_checkpoint
from vidsr.quality.evaluate import evaluate_dataset, model_predictor
from vidsr.train.config import TrainConfig
from vidsr.train.data import PairCache, PatchSampler
from vidsr.train.ema import EMA

LOG_FIELDS = ["iteration", "loss", "lr", "val_psnr", "val_ssim", "elapsed_s"]
# A time budget is turned into an iteration count from the speed over these iterations, after a short warm-up
# (cuDNN autotuning and allocator growth make the first ones slow).
BUDGET_WARMUP, BUDGET_PROBE = 20, 100
BUDGET_OVERRUN = 1.1  # a budgeted run stops at 110% of its minutes even if the schedule has iterations left


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((output - target) ** 2 + eps * eps).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss, "mse": F.mse_loss, "charbonnier": charbonnier,
}


def lr_factor(config: TrainConfig, iteration: int) -> float:
    """Multiplier of the base learning rate at `iteration` (warm-up, then cosine to lr_min or steps)."""
    if iteration < config.warmup:
        return (iteration + 1) / config.warmup
    if config.schedule == "step":
        return config.gamma ** (iteration // config.step_size)
    progress = min(1.0, (iteration - config.warmup) / max(1, config.iterations - config.warmup))
    floor = config.lr_min / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def init_from(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of a weight file whose names and shapes match into `model` (transfer between scales)."""
    source, _ = load_checkpoint(path)
    target = model.state_dict()
    copied = [key for key, value in source.items() if key in target and target[key].shape == value.shape]
    model.load_state_dict({key: source[key] for key in copied}, strict=False)
    return copied


@dataclass(frozen=True)
class Numerics:
    """How a training step computes: bf16 autocast and channels-last tensors where bf16 is native, else fp32 in
    the default layout (emulated bf16 was 30x slower than fp32, and channels-last alone slowed fp32 down, on an
    AVX2 CPU). Master weights, optimizer state and losses stay fp32 either way, so checkpoints and exact resume
    do not depend on it."""

    device_type: str
    bf16: bool

    @classmethod
    def choose(cls, mode: str, device: torch.device) -> Numerics:
        """`mode` auto: bf16 on CUDA GPUs that support it and CPUs with AVX512-BF16 or AMX (1.2 to 2x faster
        training steps on a Zen 4 EPYC, docs/PERCEPTUAL.md); fp32 | bf16 force one."""
        if mode not in ("auto", "fp32", "bf16"):
            raise InputError(f"unknown numerics {mode!r}; choose auto, fp32 or bf16")
        fast_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        return cls(device.type, mode == "bf16" or (mode == "auto" and fast_bf16))

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def layout(self, tensor_or_module: Any) -> Any:
        """A model or batch in channels-last when computing in bf16, unchanged otherwise."""
        return tensor_or_module.to(memory_format=torch.channels_last) if self.bf16 else tensor_or_module


def adam(params: Any, lr: float, device: torch.device, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel (CPU and CUDA, torch >= 2.4): one pass over the parameters, same state dict."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"), **kwargs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """'cpu', or 'cuda (NVIDIA H200)': the GPU's name goes into the exported recipe."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        if config.loss not in LOSSES:
            raise InputError(f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
        if config.schedule not in ("cosine", "step"):
            raise InputError(f"unknown schedule {config.schedule!r}; choose cosine or step")
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.out_dir = Path(config.out_dir)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.descriptor: ModelDescriptor = create_model(config.arch, **{**config.hyperparams, "scale": config.scale})
        if config.init_from:
            copied = init_from(self.descriptor.model, config.init_from)
            tqdm.write(f"initialised {len(copied)} of {len(self.descriptor.model.state_dict())} tensors "
                       f"from {config.init_from}")
        self.numerics = Numerics.choose(config.numerics, self.device)
        self.model = self.numerics.layout(self.descriptor.model.to(self.device).train())
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch shape throughout: the algorithm search pays
        cache = PairCache(config.train_dirs, config.scale, self.descriptor.in_channels,
                          config.cache_dir or self.out_dir / "cache", min_side=config.patch_size)
        self.sampler = PatchSampler(cache, config.patch_size, config.batch_size, config.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)  # only once the model and the data are known to be good
        self.optimizer = adam(self.model.parameters(), config.lr, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(config, it))
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.loss_fn = LOSSES[config.loss]
        self.iteration = 0
        self.best_psnr = -math.inf
        self.elapsed = 0.0
        self.pending_losses: list[float] = []  # losses since the last log row
        self.state_path = self.out_dir / "state.pt"
        self.log_path = self.out_dir / "log.csv"
        if self.state_path.is_file():
            self._resume()

    # ----- checkpoints -------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "iteration": self.iteration, "best_psnr": self.best_psnr,
            "elapsed": self.elapsed, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "sampler_rng": self.sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(), "pending_losses": self.pending_losses,
            "planned_iterations": self.config.iterations,
        }

    def save_state(self) -> None:
        tmp = self.state_path.with_suffix(".pt.tmp")
        torch.save(self._state(), tmp)
        os.replace(tmp, self.state_path)

    def _resume(self) -> None:
        # restricted unpickler even for our own file: a state.pt handed over with a run folder must not run code
        self._restore(load_pickle(self.state_path))

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        random.setstate(state["python_rng"])
        self.iteration, self.best_psnr, self.elapsed = state["iteration"], state["best_psnr"], state["elapsed"]
        if self.config.minutes:  # keep the schedule the budget fitted before the pause
            self.config.iterations = state.get("planned_iterations", self.config.iterations)
        self.pending_losses = state.get("pending_losses", [])  # absent in states saved before it was tracked
        self._truncate_log(self.iteration)

    # ----- logging -----------------------------------------------------------------------------------------
    def _truncate_log(self, iteration: int) -> None:
        """Drop log rows written after the checkpoint we resume from, so the log matches an unbroken run."""
        if not self.log_path.is_file():
            return
        with self.log_path.open() as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= iteration]
        self._write_rows(rows, mode="w")

    def _write_rows(self, rows: list[dict[str, Any]], mode: str = "a") -> None:
        new_file = mode == "w" or not self.log_path.is_file()
        with self.log_path.open(mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with self.log_path.open() as handle:
            rows = list(csv.DictReader(handle))
        loss_rows = [r for r in rows if r["loss"]]
        val_rows = [r for r in rows if r["val_psnr"]]
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
        ax_loss.plot([int(r["iteration"]) for r in loss_rows], [float(r["loss"]) for r in loss_rows])
        ax_loss.set(xlabel="iteration", ylabel=f"{self.config.loss} loss", yscale="log", title="training loss")
        ax_val.plot([int(r["iteration"]) for r in val_rows], [float(r["val_psnr"]) for r in val_rows], marker="o")
        ax_val.set(xlabel="iteration", ylabel="Y-PSNR (dB)", title=f"validation ({self.val_name})")
        fig.tight_layout()
        path = self.out_dir / "plot.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    @property
    def val_name(self) -> str:
        return Path(self.config.val_dir).name if self.config.val_dir else "none"

    # ----- training ----------------------------------------------------------------------------------------
    def eval_model(self) -> ModelDescriptor:
        """The descriptor of the weights to evaluate and export (EMA when enabled)."""
        model = self.ema.model if self.ema else self.model
        return ModelDescriptor(**{**self.descriptor.__dict__, "model": model})

    def validate(self) -> tuple[float, float]:
        result = evaluate_dataset(model_predictor(self.eval_model(), self.device), self.config.val_dir,
                                  self.config.scale)
        self.model.train()
        return result.psnr, result.ssim

    def export(self, path: Path, val_psnr: float | None = None) -> Path:
        config = self.config
        recipe = {
            "data": [Path(d).name for d in config.train_dirs], "iterations": self.iteration,
            "patch_size": config.patch_size, "batch_size": config.batch_size, "loss": config.loss,
            "lr": config.lr, "schedule": config.schedule, "ema_decay": config.ema_decay, "seed": config.seed,
            "device": device_label(self.device), "train_hours": round(self.elapsed / 3600, 2),
            "init_from": Path(config.init_from).name if config.init_from else None,
        }
        if config.init_from:  # the starting weights' own recipe: the card shows the whole lineage
            recipe["init_recipe"] = load_checkpoint(config.init_from)[1].get("recipe")
        extra = {"validation": {self.val_name: round(val_psnr, 3)}} if val_psnr is not None else {}
        name = config.name or f"{config.arch}-x{config.scale}"
        return save_checkpoint(path, self.eval_model(), name=name, recipe=recipe, **extra)

    def step(self) -> float:
        lr, hr = (t.to(self.device, non_blocking=True) for t in self.sampler.batch())
        with self.numerics.autocast():
            output = self.model(self.numerics.layout(lr))
        loss = self.loss_fn(output.float(), hr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.iteration += 1
        return loss.item()

    def _fit_budget(self, probe_start: tuple[int, float]) -> None:
        """Set `iterations` so that the run ends when `minutes` have passed, at the speed just measured. The
        cosine schedule reads `iterations`, so it anneals to lr_min at the end of the budget."""
        first, since = probe_start
        rate = (self.iteration - first) / max(self.elapsed - since, 1e-9)
        remaining = self.config.minutes * 60 - self.elapsed
        self.config.iterations = max(self.iteration + 1, self.iteration + int(rate * remaining))
        tqdm.write(f"{rate:.1f} it/s: {self.config.iterations} iterations fit in {self.config.minutes:g} minutes")

    def _over_budget(self) -> bool:
        """A slowdown after the speed was measured (other jobs on the device) must not overrun the budget much."""
        return bool(self.config.minutes) and self.elapsed > self.config.minutes * 60 * BUDGET_OVERRUN

    def run(self, progress: bool = True, until: int | None = None) -> Path:
        """Train to `config.iterations` (continuing a resumed run), or pause after iteration `until` (resumable,
        same result as an unbroken run), and export the EMA weights. With `config.minutes`, the iteration count
        is fitted to the time budget once the speed is known."""
        config = self.config
        fitting = bool(config.minutes) and self.iteration < BUDGET_WARMUP + BUDGET_PROBE
        last_save = time.monotonic()
        started = time.monotonic() - self.elapsed
        probe_start = (self.iteration, self.elapsed)
        losses = self.pending_losses
        bar = tqdm(total=config.iterations, initial=self.iteration, disable=not progress, desc="train")
        while self.iteration < min(until or config.iterations, config.iterations):
            losses.append(self.step())
            bar.update(1)
            self.elapsed = time.monotonic() - started
            if fitting and self.iteration == BUDGET_WARMUP:
                probe_start = (self.iteration, self.elapsed)
            if fitting and self.iteration == BUDGET_WARMUP + BUDGET_PROBE:
                self._fit_budget(probe_start)
                bar.total, fitting = config.iterations, False
            if self._over_budget():  # end here, with the last iteration's log row, validation and export
                config.iterations = bar.total = self.iteration
            row: dict[str, Any] = {}
            if self.iteration % config.log_every == 0 or self.iteration == config.iterations:
                row = {"iteration": self.iteration, "loss": f"{np.mean(losses):.6f}",
                       "lr": f"{self.scheduler.get_last_lr()[0]:.3g}", "elapsed_s": round(self.elapsed)}
                bar.set_postfix(loss=row["loss"], lr=row["lr"])
                losses.clear()
            if config.val_dir and (self.iteration % config.val_every == 0 or self.iteration == config.iterations):
                val_psnr, val_ssim = self.validate()
                row.update(iteration=self.iteration, val_psnr=f"{val_psnr:.3f}", val_ssim=f"{val_ssim:.4f}",
                           elapsed_s=round(self.elapsed))
                bar.write(f"iteration {self.iteration}: {self.val_name} Y-PSNR {val_psnr:.3f} dB")
                if val_psnr > self.best_psnr:
                    self.best_psnr = val_psnr
                    self.export(self.out_dir / "best.safetensors", val_psnr)
            if row:
                self._write_rows([row])
                if row.get("val_psnr"):
                    self.plot()
            if time.monotonic() - last_save > config.checkpoint_minutes * 60:
                self.save_state()
                last_save = time.monotonic()
        bar.close()
        self.save_state()
        return self.export(self.out_dir / "last.safetensors", self.best_psnr if config.val_dir else None)
