"""Training configuration: a TOML file, then command-line overrides."""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vidsr.errors import FRACTION, NON_NEGATIVE, NON_NEGATIVE_WHOLE, POSITIVE, POSITIVE_WHOLE, InputError, NumberRange


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


# The numbers a config may hold, shared with `vidsr train`'s options; the other fields are checked by type
RANGES: dict[str, NumberRange] = {
    "scale": POSITIVE_WHOLE, "patch_size": POSITIVE_WHOLE, "batch_size": POSITIVE_WHOLE, "iterations": POSITIVE_WHOLE,
    "minutes": POSITIVE, "lr": POSITIVE, "lr_min": NON_NEGATIVE, "step_size": POSITIVE_WHOLE, "gamma": POSITIVE,
    "warmup": NON_NEGATIVE_WHOLE, "ema_decay": NumberRange(0, 1, high_open=True), "seed": NON_NEGATIVE_WHOLE,
    "threads": POSITIVE_WHOLE, "log_every": POSITIVE_WHOLE, "val_every": POSITIVE_WHOLE,
    "checkpoint_minutes": POSITIVE,
    # the [gan] table's
    "d_features": POSITIVE_WHOLE, "d_lr": POSITIVE, "pixel_weight": NON_NEGATIVE, "perceptual_weight": NON_NEGATIVE,
    "adversarial_weight": NON_NEGATIVE, "fft_weight": NON_NEGATIVE, "fft_amplitude_weight": NON_NEGATIVE,
    "ms_ssim_weight": NON_NEGATIVE, "artifact_weight": NON_NEGATIVE, "degradation_workers": NON_NEGATIVE_WHOLE,
    "pool_size": NON_NEGATIVE_WHOLE, "pool_crop": NON_NEGATIVE_WHOLE, "pool_refresh": NON_NEGATIVE,  # 0: a fixed pool
    "teacher_alpha": FRACTION,
}
CHOICES: dict[str, tuple[str, ...]] = {
    "loss": ("l1", "mse", "charbonnier"), "schedule": ("cosine", "step"), "numerics": ("auto", "fp32", "bf16"),
    "discriminator": ("vgg", "unet"), "adversarial": ("relativistic", "standard"), "teacher_tone": ("teacher", "input"),
}


def checked(kind: type, values: dict[str, Any], where: str) -> Any:
    """`kind(**values)` for a config dataclass, each value first checked against its field's type, range and
    choices, so that a config file's mistake is one line naming the key instead of a failure mid-run."""
    hints = typing.get_type_hints(kind)
    for key, value in values.items():
        if not _fits(value, hints[key]):
            raise InputError(f"{where}: {key} must be {_describe(hints[key])}, got {value!r}")
        if key in RANGES and value is not None and not RANGES[key].holds(value):
            raise InputError(f"{where}: {key} must be {RANGES[key]}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise InputError(f"{where}: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return kind(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value has the annotated type (an int does for float; bools are not numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(item, args[1]) for item in value.values())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arg) for arg in args)
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", type(None): "unset",
             list: "a list", dict: "a table"}
    return names.get(origin or hint, str(hint))


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
    return config_from(values, f"config {path}" if path is not None else "config")


def config_from(values: dict[str, Any], where: str) -> TrainConfig:
    """A TrainConfig from a config's values, checked (`checked`); `where` names the file in messages."""
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise InputError(f"unknown config keys: {', '.join(unknown)}")
    return checked(TrainConfig, values, where)
