"""Training configuration: a TOML file, then command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vidsr.errors import InputError


@dataclass
class TrainConfig:
    arch: str = "espcn"
    scale: int = 2
    hyperparams: dict[str, Any] = field(default_factory=dict)  # passed to the arch's build(), e.g. channels
    train_dirs: list[str] = field(default_factory=list)  # folders of HR images
    val_dir: str | None = None  # HR images evaluated with the standard protocol (e.g. Set5)
    cache_dir: str | None = None  # where the LR/HR pairs are cached (default: <out_dir>/cache)
    out_dir: str = "runs/train"
    name: str | None = None  # name of the exported model (default: <arch>-x<scale>)
    init_from: str | None = None  # weights to start from; tensors whose shapes match are copied (e.g. x2 -> x4)
    patch_size: int = 24  # low-resolution side of a training patch
    batch_size: int = 32
    iterations: int = 100_000
    minutes: float | None = None  # time budget: `iterations` is then fitted to the measured speed (see Trainer)
    loss: str = "l1"  # l1 | mse | charbonnier
    lr: float = 1e-3
    lr_min: float = 1e-6
    schedule: str = "cosine"  # cosine | step
    step_size: int = 50_000  # step schedule: multiply lr by gamma every step_size iterations
    gamma: float = 0.5
    warmup: int = 0  # iterations of linear learning-rate warm-up
    ema_decay: float = 0.999  # 0 disables EMA
    seed: int = 0
    device: str = "auto"
    numerics: str = "auto"  # auto (bf16 autocast + channels-last where bf16 is native) | fp32 | bf16
    threads: int | None = None  # torch CPU threads (None: torch default)
    log_every: int = 100
    val_every: int = 2000
    checkpoint_minutes: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """A config file's tables (none without a file), or one clear error."""
    if path is None:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read config {path}: {exc}") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Config from a TOML file (optional) with `overrides` (None values ignored) applied on top."""
    values = read_toml(path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown config keys: {', '.join(unknown)}")
    return TrainConfig(**values)
