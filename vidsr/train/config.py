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


def read_toml(path: str | Path | None, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's tables (none without a file), or one clear error.

    `extends = "file.toml"` (or a list of files, applied in order; paths relative to the including file) starts
    from those files' tables, so recipes share a degradation pool or a loss set instead of repeating it. Tables
    merge key by key; any other value in the including file replaces the extended one."""
    if path is None:
        return {}
    path = Path(path)
    if path.resolve() in _including:
        raise InputError(f"cannot read config {path}: it extends itself")
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read config {path}: {exc}") from None
    bases = values.pop("extends", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise InputError(f"cannot read config {path}: extends must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, read_toml(path.parent / base, (*_including, path.resolve())))
    return _merge(merged, values)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_tables else value
    return merged


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Config from a TOML file (optional) with `overrides` (None values ignored) applied on top."""
    values = read_toml(path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown config keys: {', '.join(unknown)}")
    return TrainConfig(**values)
