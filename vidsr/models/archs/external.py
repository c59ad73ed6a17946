"""Third-party checkpoints through spandrel (MIT; the loader chaiNNer and ComfyUI use): it recognises about 40
community architectures from state-dict keys, reads their hyper-parameters and says what the engine must know
(scale, channels, size requirements, half-precision support, tiling advice). spandrel is imported here only,
and only when a third-party file is loaded. With the optional `spandrel_extra_arches` installed (non-commercial
licences) its architectures are recognised too."""

from __future__ import annotations

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
    """spandrel's network with its calling convention (a few architectures return a tuple, or rescale)."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._call = call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self._call(self.net, x)
        # Some architectures build float32 tensors on the fly (SwinIR's attention mask for a new size): autocast
        # runs their matmuls in the half precision asked for instead of failing on mixed dtypes.
        with torch.autocast(x.device.type, dtype=x.dtype):
            return self._call(self.net, x).to(x.dtype)


@lru_cache(maxsize=1)
def registry() -> tuple[Any, frozenset[str]]:
    """spandrel's registry, with spandrel_extra_arches added when installed, and the ids that came from it."""
    import spandrel

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


def load_external(state_dict: Mapping[str, torch.Tensor]) -> ModelDescriptor:
    """Build a third-party model with spandrel, or one line saying why it cannot be used."""
    import spandrel

    loaded_registry, extra = registry()
    try:
        loaded = loaded_registry.load(dict(state_dict))
    except spandrel.UnsupportedModelError:
        shown = ", ".join(f"{key} {tuple(value.shape)}" for key, value in list(state_dict.items())[:4])
        raise ModelError(f"unknown architecture: neither vidsr nor spandrel recognises these weights "
                         f"({len(state_dict)} tensors: {shown}, ...)") from None
    except Exception as exc:  # noqa: BLE001 - an architecture's own loader fails in its own ways on odd files
        raise ModelError(f"spandrel recognised the weights but could not build the model: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    name = loaded.architecture.name
    _refuse_unusable(loaded, name)
    return ModelDescriptor(
        # the calling convention has no public accessor; spandrel's own __call__ uses this attribute
        model=SpandrelNetwork(loaded.model, loaded._call_fn).eval().requires_grad_(False),
        arch=name, scale=loaded.scale, in_channels=loaded.input_channels, out_channels=loaded.output_channels,
        color=color_of(loaded.input_channels), supports_fp16=loaded.supports_half,
        supports_bf16=loaded.supports_bfloat16, size_multiple=loaded.size_requirements.multiple_of,
        size_min=loaded.size_requirements.minimum, size_square=loaded.size_requirements.square,
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
