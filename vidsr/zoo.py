"""Named models: every `weights/<arch>_x<scale>[_variant].safetensors` file bundled with the package is a model
called `<arch>-x<scale>[-variant]`; adding a weight file adds a model."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vidsr.archs import ModelDescriptor, model_from_state_dict
from vidsr.checkpoint import load_checkpoint
from vidsr.errors import ModelError

DEFAULT_MODEL = "espcn-x2"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    arch: str
    scale: int
    color: str
    params: int
    gmacs_1080p: float  # per 1920x1080 output frame
    set5_psnr: float | None
    set14_psnr: float | None
    path: Path


def bundled_weights() -> dict[str, Path]:
    """Bundled model names -> weight files."""
    root = importlib.resources.files("vidsr.weights")
    files = sorted(Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".safetensors"))
    return {path.stem.replace("_", "-"): path for path in files}


def load_model(name_or_path: str | Path = DEFAULT_MODEL) -> ModelDescriptor:
    """Load a bundled model by name (`espcn-x2`) or any weight file (.safetensors / .pth / .pt) by path."""
    bundled = bundled_weights()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        path = bundled[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            names = ", ".join(bundled) or "none bundled"
            raise ModelError(f"no model named or found at {str(name_or_path)!r} (bundled models: {names})")
    tensors, metadata = load_checkpoint(path)
    metadata.setdefault("name", path.stem.replace("_", "-"))
    return model_from_state_dict(tensors, metadata)


def list_models() -> list[ModelInfo]:
    """Every bundled model with its cost and the PSNR recorded in its weight file."""
    return [_model_info(name, path, path.stat().st_mtime_ns) for name, path in bundled_weights().items()]


@lru_cache(maxsize=64)
def _model_info(name: str, path: Path, mtime_ns: int) -> ModelInfo:
    descriptor = load_model(path)
    psnr = descriptor.metadata.get("psnr", {})
    return ModelInfo(
        name=name, arch=descriptor.arch, scale=descriptor.scale, color=descriptor.color,
        params=descriptor.params, gmacs_1080p=descriptor.gmacs(), set5_psnr=psnr.get("Set5"),
        set14_psnr=psnr.get("Set14"), path=path,
    )
