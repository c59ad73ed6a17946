"""Third-party checkpoints through spandrel (MIT; the loader chaiNNer and ComfyUI use): it recognises about 40
community architectures from state-dict keys, reads their hyper-parameters and says what the engine must know
(scale, channels, size requirements, half-precision support, tiling advice). spandrel is imported here only,
and only when a third-party file is loaded. With the optional `spandrel_extra_arches` installed (non-commercial
licences) its architectures are recognised too."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from vidsr.errors import ModelError
from vidsr.models.archs.base import ModelDescriptor, color_of

SCALES = range(1, 9)
CHANNELS = (1, 3, 4)
EXTRA_LICENCE = "non-commercial (architecture from spandrel_extra_arches)"


class SpandrelNetwork(nn.Module):
    """spandrel's network with its calling convention (a few architectures return a tuple, or rescale). A
    failure of the third-party network is one line naming the model (`label`) and the input size."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 label: str) -> None:
        super().__init__()
        self.net = net
        self._call = call
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            if x.dtype == torch.float32:
                return self._call(self.net, x)
            # Some architectures build float32 tensors on the fly (SwinIR's attention mask for a new size):
            # autocast runs their matmuls in the half precision asked for instead of failing on mixed dtypes.
            with torch.autocast(x.device.type, dtype=x.dtype):
                return self._call(self.net, x).to(x.dtype)
        except Exception as exc:  # noqa: BLE001 - a third-party network fails in its own ways (einops, shapes)
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc):
                raise  # the upscaler answers this one with smaller batches and tiles
            raise ModelError(f"{self.label} failed on a {x.shape[-1]}x{x.shape[-2]} input: {_last_line(exc)}") from None


def _last_line(exc: BaseException) -> str:
    """The part of a library's message that says why (einops ends its long message with it), on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return " ".join(lines[-1].split())[:300]


@lru_cache(maxsize=1)
def registry() -> tuple[Any, frozenset[str]]:
    """spandrel's registry, with spandrel_extra_arches added when installed, and the ids that came from it."""
    import spandrel

    # SwinIR, HAT, DAT and others call torch.meshgrid without `indexing`: torch's notice on every run is no
    # concern of vidsr's users (only this message is filtered, once, where spandrel is first imported).
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
    try:
        import spandrel_extra_arches
    except ImportError:
        return spandrel.MAIN_REGISTRY, frozenset()
    added = spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel.MAIN_REGISTRY, frozenset(support.architecture.id for support in added)


def architectures() -> list[tuple[str, bool]]:
    """(architecture name, from the non-commercial extra) for every architecture spandrel can load."""
    loaded, extra = registry()
    return sorted(((support.architecture.name, support.architecture.id in extra) for support in loaded),
                  key=lambda item: item[0].lower())


def load_external(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> ModelDescriptor:
    """Build a third-party model with spandrel (`name`: the file's, for messages), or one line saying why it
    cannot be used."""
    import spandrel

    loaded_registry, extra = registry()
    where = f"{name}: " if name else ""
    try:
        loaded = loaded_registry.load(dict(state_dict))
    except spandrel.UnsupportedModelError:
        shown = ", ".join(f"{key} {tuple(value.shape)}" for key, value in list(state_dict.items())[:4])
        raise ModelError(f"{where}unknown architecture: neither vidsr nor spandrel recognises these weights "
                         f"({len(state_dict)} tensors: {shown}, ...)") from None
    except Exception as exc:  # noqa: BLE001 - an architecture's own loader fails in its own ways on odd files
        raise ModelError(f"{where}spandrel recognised the weights as {_detected(loaded_registry, state_dict)} but "
                         f"they do not fit it: {_build_failure(exc, state_dict)}") from None
    arch = loaded.architecture.name
    _refuse_unusable(loaded, arch)
    _fold_reparameterised(loaded.model)
    multiple, minimum = _size_needs(loaded)
    return ModelDescriptor(
        # the calling convention has no public accessor; spandrel's own __call__ uses this attribute
        model=SpandrelNetwork(loaded.model, loaded._call_fn, f"{name} ({arch})" if name else arch
                              ).eval().requires_grad_(False),
        arch=arch, scale=loaded.scale, in_channels=loaded.input_channels, out_channels=loaded.output_channels,
        color=color_of(loaded.input_channels), supports_fp16=loaded.supports_half,
        supports_bf16=loaded.supports_bfloat16, size_multiple=multiple,
        size_min=minimum, size_square=loaded.size_requirements.square,
        purpose=loaded.purpose, tiling=loaded.tiling.name.lower(), source="spandrel", luma_range="full",
        licence=EXTRA_LICENCE if loaded.architecture.id in extra else None,
        hyperparams={"tags": list(loaded.tags)},
    )


def _refuse_unusable(loaded: Any, name: str) -> None:
    if loaded.purpose == "FaceSR":
        raise ModelError(f"{name} is a face-restoration model: it expects aligned face crops, not whole frames")
    if loaded.purpose not in ("SR", "Restoration"):
        raise ModelError(f"{name} is an {loaded.purpose.lower()} model (it needs a mask): not an image-to-image "
                         "model vidsr can run")
    if loaded.scale not in SCALES:
        raise ModelError(f"{name} scales by {loaded.scale}: vidsr runs scales 1 to 8")
    if loaded.input_channels not in CHANNELS or loaded.output_channels not in CHANNELS:
        raise ModelError(f"{name} maps {loaded.input_channels} to {loaded.output_channels} channels: vidsr runs "
                         "grey (1), RGB (3) and RGBA (4) models")
    if (loaded.input_channels == 1) != (loaded.output_channels == 1):
        raise ModelError(f"{name} maps {loaded.input_channels} to {loaded.output_channels} channels (grey and colour "
                         "mixed): vidsr runs models whose output has the input's colours")


# --- reading spandrel's build failures in the file's own terms -----------------------------------------------

_MISSING = re.compile(r'Missing key\(s\) in state_dict: ((?:"[^"]+"(?:, )?)+)')
_UNEXPECTED = re.compile(r'Unexpected key\(s\) in state_dict: ((?:"[^"]+"(?:, )?)+)')
_WRONG_SHAPE = re.compile(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from "
                          r"checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)")
_SHOWN = 3  # keys named per kind of problem; the rest are counted


def _detected(loaded_registry: Any, state_dict: Mapping[str, torch.Tensor]) -> str:
    from spandrel import canonicalize_state_dict

    canonical = canonicalize_state_dict(dict(state_dict))
    return next((support.architecture.name for support in loaded_registry.architectures("detection")
                 if support.detect(canonical)), "a known architecture")


def _build_failure(exc: Exception, state_dict: Mapping[str, torch.Tensor]) -> str:
    """What does not fit, named as the file names its tensors (spandrel renames some layouts before loading:
    ESRGAN's `body.5.rdb2.conv3.weight` is its `model.1.sub.5.RDB2.conv3.0.weight`)."""
    names = _file_names(state_dict)
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return _listed("missing", [_file_key(exc.args[0], names)])
    text = str(exc)
    problems = [_listed("missing", [_file_key(key, names) for key in _quoted(_MISSING, text)]),
                _listed("not used by the network", [_file_key(key, names) for key in _quoted(_UNEXPECTED, text)]),
                _listed("wrong shape", [f"{_file_key(key, names)} ({_dims(got)} in the file, the network needs "
                                        f"{_dims(needed)})" for key, got, needed in _WRONG_SHAPE.findall(text)])]
    return "; ".join(problem for problem in problems if problem) or _last_line(exc)


def _quoted(pattern: re.Pattern[str], text: str) -> list[str]:
    found = pattern.search(text)
    return re.findall(r'"([^"]+)"', found[1]) if found else []


def _listed(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{kind}: {', '.join(keys[:_SHOWN])}{more}"


def _dims(shape: str) -> str:
    return "x".join(part.strip() for part in shape.split(",") if part.strip()) or "a scalar"


def _file_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """spandrel's key -> the file's key, for every tensor it keeps (told by identity: renaming keeps them)."""
    from spandrel import canonicalize_state_dict

    by_identity = {id(tensor): key for key, tensor in state_dict.items()}
    canonical = canonicalize_state_dict(dict(state_dict))
    renamed = [canonical]
    try:  # ESRGAN reads every RRDBNet layout through the old one; the converter is spandrel's own, unexported
        from spandrel.architectures.ESRGAN import _to_old_arch

        renamed.append(_to_old_arch(canonical))
    except Exception:  # noqa: BLE001 - not an ESRGAN file (or another spandrel version): its names are kept
        pass
    return {key: by_identity[id(tensor)] for tensors in renamed for key, tensor in tensors.items()
            if id(tensor) in by_identity}


def _file_key(key: str, names: dict[str, str]) -> str:
    """The file's name for spandrel's `key`; for a tensor the file lacks, by analogy with a kept tensor of the
    same pattern (model.1.sub.5.RDB2.conv3.0.weight is to body.5.rdb2.conv3.weight as ...)."""
    if key in names:
        return names[key]
    numbers = [int(n) for n in re.findall(r"\d+", key)]
    template = re.sub(r"\d+", "#", key)
    analogues = [(theirs, own) for theirs, own in names.items() if re.sub(r"\d+", "#", theirs) == template]
    for theirs, own in sorted(analogues, key=lambda pair: _differences(pair[0], numbers)):
        translated = _translate(theirs, own, numbers)
        if translated is not None:
            return translated
    return key


def _differences(key: str, numbers: list[int]) -> int:
    return sum(a != b for a, b in zip((int(n) for n in re.findall(r"\d+", key)), numbers, strict=True))


def _translate(theirs: str, own: str, numbers: list[int]) -> str | None:
    """`own` with the numbers changed where `theirs` differs from `numbers`; None where that is ambiguous."""
    own_numbers = [int(n) for n in re.findall(r"\d+", own)]
    for old, new in zip((int(n) for n in re.findall(r"\d+", theirs)), numbers, strict=True):
        if old != new:
            if own_numbers.count(old) != 1:
                return None
            own_numbers[own_numbers.index(old)] = new
    parts = re.split(r"\d+", own)
    return "".join(part + (str(n) if i < len(own_numbers) else "") for i, (part, n) in
                   enumerate(zip(parts, [*own_numbers, 0], strict=True)))


# --- what spandrel's networks need to run as their authors run them ------------------------------------------

def _fold_reparameterised(net: nn.Module) -> None:
    """SPAN's Conv3XC folds its three convolutions into one on every forward pass in eval mode, writing its
    own weights (`update_params`): two threads running one model read them half-written (garbled frames).
    Fold once here, run the folded convolution only, and fold again whenever weights are loaded (blending)."""
    try:
        from spandrel.architectures.SPAN import __arch as span_arch  # the block is not exported
    except ImportError:
        return
    for module in net.modules():
        if type(module) is span_arch.span.Conv3XC:
            module.update_params()
            module.__class__ = _folded_class(span_arch.span.Conv3XC)
            module.register_load_state_dict_post_hook(_refold)


@lru_cache(maxsize=1)
def _folded_class(conv3xc: type[nn.Module]) -> type[nn.Module]:
    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:  # Conv3XC's eval path without the folding
        out = self.eval_conv(x)
        return nn.functional.leaky_relu(out, negative_slope=0.05) if self.has_relu else out

    return type("FoldedConv3XC", (conv3xc,), {"forward": forward, "__module__": __name__})


def _refold(module: Any, incompatible_keys: Any) -> None:
    module.update_params()


def _size_needs(loaded: Any) -> tuple[int, int]:
    """(size multiple, minimum side) the network needs. spandrel asks some architectures for a stricter
    multiple than their networks need, and a picture padded further than its authors' inference pads comes out
    different (SAFMN's pooling grid moves, Real-ESRGAN x2plus's last columns change)."""
    requirements = loaded.size_requirements
    need = _SIZE_NEEDS.get(loaded.architecture.id)
    return (requirements.multiple_of, requirements.minimum) if need is None else need(loaded.model, requirements)


_SIZE_NEEDS: dict[str, Callable[[nn.Module, Any], tuple[int, int]]] = {
    # adaptive pooling to h // 8 cells works at any size from 8; the authors' test runs the network as it is
    "SAFMN": lambda net, req: (1, 8),
    # pixel-unshuffled by its factor first, then SAFMN's pooling
    "SAFMNBCIE": lambda net, req: (net.to_feat[0].downscale_factor, 8 * net.to_feat[0].downscale_factor),
    # its forward pads itself, the way the authors' inference_CRAFT.py does
    "CRAFT": lambda net, req: (1, req.minimum),
    # an unshuffling forward reflect-pads to its factor itself (2 for x2plus), as Real-ESRGAN's RealESRGANer does
    "ESRGAN": lambda net, req: (1, req.minimum),
    # the authors' pre_process reflect-pads to the window size (16 in the published models)
    "DRCT": lambda net, req: (net.window_size, req.minimum),
    # the authors' test pads to 2 ** the denoiser's levels (4)
    "RetinexFormer": lambda net, req: (2 ** max(m.level for m in net.modules() if type(m).__name__ == "Denoiser"),
                                       req.minimum),
}
