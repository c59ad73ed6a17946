"""Read and write weights. Project format: safetensors with JSON-encoded metadata (arch, hyperparams, scale,
recipe, measured PSNR). Third-party `.pth`/`.pt` files are read with `torch.load(weights_only=True)` only, so
loading a checkpoint never runs code from it."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vidsr.archs import ModelDescriptor
from vidsr.errors import ModelError

# Wrapper keys used by training frameworks, most preferred first (EMA weights are the ones to run).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "net", "model", "generator")
SAFETENSORS_SUFFIXES = {".safetensors"}
PICKLE_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (wrappers and `module.` prefixes removed) and metadata of a weight file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return unwrap_state_dict(_load_pickle(path)), {}
    raise ModelError(f"{path.name}: unknown weight format (expected .safetensors, .pth or .pt)")


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw_metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path.name}: not a readable safetensors file ({exc})") from None
    return unwrap_state_dict(tensors), {key: _decode(value) for key, value in raw_metadata.items()}


def _load_pickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelError(f"{path.name}: {_pickle_problem(path, exc)}") from None


def _pickle_problem(path: Path, exc: Exception) -> str:
    """What a .pth file that does not load is, in a line (torch's own messages run to paragraphs, and suggest
    an unsafe load)."""
    with path.open("rb") as handle:
        head = handle.read(2)
    if not head or isinstance(exc, EOFError):
        return "empty or truncated, not a complete PyTorch checkpoint"
    is_zip, is_pickle = head == b"PK", head[0] == 0x80 and 2 <= head[1] <= 5
    if not (is_zip or is_pickle):
        return "not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        return ("refused: it holds Python code or objects besides tensors" + (f" ({found[1]})" if found else "")
                + "; vidsr loads plain tensor checkpoints only")
    return "damaged or truncated PyTorch checkpoint (its archive cannot be read)"


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state dict inside training-framework wrappers and drop DataParallel `module.` prefixes."""
    while isinstance(obj, Mapping) and not _has_tensors(obj):
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            raise ModelError(f"checkpoint holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ModelError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if isinstance(obj.get("params_ema"), Mapping):  # tensors next to an EMA copy: prefer the EMA copy
        obj = obj["params_ema"]
    return {_strip_prefix(key): value for key, value in obj.items() if isinstance(value, torch.Tensor)}


def _has_tensors(obj: Mapping) -> bool:
    return any(isinstance(value, torch.Tensor) for value in obj.values())


def _strip_prefix(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def save_checkpoint(path: str | Path, descriptor: ModelDescriptor, **metadata: Any) -> Path:
    """Write the model's weights as safetensors; arch, scale, hyperparams and `metadata` go in the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The cost goes in the header too, so that `vidsr models` lists models without loading torch.
    header = {**metadata, "arch": descriptor.arch, "scale": descriptor.scale, "color": descriptor.color,
              "hyperparams": descriptor.hyperparams, "params": descriptor.params, "gmacs_1080p": descriptor.gmacs()}
    tensors = {key: value.detach().cpu().contiguous() for key, value in descriptor.model.state_dict().items()}
    save_file(tensors, str(path), metadata={key: json.dumps(value) for key, value in header.items()})
    return path


def _decode(value: str) -> Any:
    """Metadata values are JSON; other tools' safetensors files store plain strings."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def update_metadata(path: str | Path, **fields: Any) -> None:
    """Merge `fields` into the metadata of a project safetensors file (e.g. PSNR measured by `vidsr eval`)."""
    _rewrite(Path(path), lambda tensors: tensors, fields)


def store_half(path: str | Path) -> None:
    """Store a project safetensors file's float32 tensors as fp16: half the size for bundled weights (every
    model here is run from fp16 weights anyway; loading casts them to the precision asked for)."""
    _rewrite(Path(path), lambda tensors: {key: value.half() if value.dtype == torch.float32 else value
                                          for key, value in tensors.items()}, {})


def _rewrite(path: Path, transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
             fields: dict[str, Any]) -> None:
    tensors = transform(load_file(str(path)))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    metadata.update({key: json.dumps(value) for key, value in fields.items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
