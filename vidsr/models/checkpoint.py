"""Read and write weights. Project format: safetensors with JSON-encoded metadata (arch, hyperparams, scale,
recipe, measured PSNR). Files are told apart by their first bytes, not their names (downloads are often renamed).
Pickled checkpoints are read with `torch.load(weights_only=True)` only, so loading a checkpoint never runs code
from it; TorchScript archives (which are code) are refused."""

from __future__ import annotations

import inspect
import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vidsr.errors import ModelError
from vidsr.models.archs import ARCHS, ModelDescriptor

# Wrapper keys used by training frameworks, most preferred first (EMA weights are the ones to run).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "net", "model", "generator")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = b"\x80"  # torch.save's legacy (non-zip) format starts with a pickle


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (wrappers and `module.` prefixes removed) and metadata of a weight file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if file_kind(path) == "safetensors":
        return _load_safetensors(path)
    return unwrap_state_dict(load_pickle(path)), {}


def file_kind(path: Path) -> str:
    """"safetensors" or "pickle" (torch.save, zip or legacy), from the first bytes; anything else is an error."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        raise ModelError(f"{path.name}: empty or truncated, not a complete PyTorch checkpoint")
    # safetensors first: its 8-byte header length can start with any byte, 0x80 (a pickle's first) included
    if len(head) > 8 and head[8:9] == b"{":
        header_length = struct.unpack("<Q", head[:8])[0]
        if 8 + header_length > path.stat().st_size:
            raise ModelError(f"{path.name}: truncated safetensors file ({path.stat().st_size} bytes, its header "
                             f"alone needs {8 + header_length})")
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        _refuse_torchscript(path)
        return "pickle"
    if head.startswith(_PICKLE_PROTOCOL_OPCODE):
        return "pickle"
    raise ModelError(f"{path.name}: not a PyTorch checkpoint or safetensors file ({_looks_like(head)})")


def _looks_like(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page: the download link gave a web page instead of the file"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer: fetch the real file with git lfs pull"
    if head[:1] == b"\x08" and b"pytorch" in head.lower():
        return "an ONNX graph: vidsr runs PyTorch weights (.pth / .safetensors)"
    return f"starts with {head[:8].hex(' ')}; expected safetensors or a torch.save checkpoint"


def _refuse_torchscript(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ModelError(f"{path.name}: damaged or truncated PyTorch checkpoint (its archive cannot be read)") from None
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        raise ModelError(f"{path.name}: a TorchScript archive (a program, not weights); vidsr loads weights only: "
                         "use the model's .pth or .safetensors file")


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw_metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path.name}: damaged safetensors file ({_one_line(exc)})") from None
    metadata = {key: _decode(value) for key, value in raw_metadata.items()}
    check_header(metadata, path.name)
    return unwrap_state_dict(tensors), metadata


def _whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and low <= value <= high


def _number(value: Any) -> bool:
    return type(value) in (int, float) and value == value and abs(value) != float("inf")


# vidsr's header: field -> (what it must be, the check). Only fields present are checked: files of other
# tools carry their own metadata, and only `arch` makes a header vidsr's.
_HEADER: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "arch": (f"one of vidsr's architectures ({', '.join(ARCHS)})", lambda value: isinstance(value, str)
             and value in ARCHS),
    "scale": ("a whole number from 1 to 8", _whole(1, 8)),
    "color": ('"y" or "rgb"', lambda value: isinstance(value, str) and value in ("y", "rgb")),
    "hyperparams": ("an object of hyper-parameters", lambda value: isinstance(value, dict)),
    "params": ("a whole number", _whole(0, 2**53)),
    "gmacs_1080p": ("a number", _number),
    "psnr": ("an object of numbers", lambda value: isinstance(value, dict) and all(map(_number, value.values()))),
    "ssim": ("an object of numbers", lambda value: isinstance(value, dict) and all(map(_number, value.values()))),
    "recipe": ("an object", lambda value: isinstance(value, dict)),
}
_ANY_FILE = {  # read from any safetensors file's metadata, vidsr's header or not
    "name": ("a string", lambda value: isinstance(value, str)),
    "psnr_model": ("a model name or file name", lambda value: isinstance(value, str) and value != ""),
}
_HYPERPARAM_INT = _whole(1, 4096)  # channels, features, blocks: past this a header asks for absurd memory


def check_header(metadata: Mapping[str, Any], filename: str) -> None:
    """One line naming the first field of a weight file's header that vidsr cannot use as it is."""
    fields = {**_ANY_FILE, **_HEADER} if "arch" in metadata else _ANY_FILE
    for field_name, (expected, valid) in fields.items():
        if field_name in metadata and not valid(metadata[field_name]):
            raise ModelError(f"{filename}: its header's {field_name!r} must be {expected}, not "
                             f"{_shown(metadata[field_name])}")
    if "arch" in metadata:
        _check_hyperparams(metadata["arch"], metadata.get("hyperparams", {}), filename)


def _check_hyperparams(arch: str, hyperparams: Mapping[str, Any], filename: str) -> None:
    """Each hyper-parameter one the architecture takes, of its type (`build`'s defaults tell both)."""
    accepted = inspect.signature(ARCHS[arch].build).parameters
    for key, value in hyperparams.items():
        if key not in accepted:
            raise ModelError(f"{filename}: its header's hyperparams has {key!r}, which {arch} does not take "
                             f"(it takes {', '.join(accepted)})")
        default = accepted[key].default
        valid = _HYPERPARAM_INT(value) if type(default) is int else isinstance(value, type(default))
        if not valid:
            expected = "a whole number from 1 to 4096" if type(default) is int else f"a {type(default).__name__}"
            raise ModelError(f"{filename}: its header's hyperparams {key!r} must be {expected}, not {_shown(value)}")


def _shown(value: Any) -> str:
    return _one_line(json.dumps(value))[:60]


def load_pickle(path: Path) -> Any:
    """A torch.save file's content, onto the CPU, through the restricted unpickler (tensors and plain values only);
    anything else is one line."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise ModelError(f"{path.name}: refused: it holds Python code or objects besides tensors"
                         + (f" (the pickle would call {found[1]})" if found else "")
                         + "; vidsr loads plain tensor checkpoints only") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(f"{path.name}: damaged or truncated PyTorch checkpoint ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


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
