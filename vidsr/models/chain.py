"""Model chains: several models run in sequence on the device in one pass (a 1x DeJPEG model, then a 2x one; or
2x then 2x). The chain is one ModelDescriptor, so the tiler, the batcher and every frontend see one model; its
scale is the product of the stages'. Y and RGB models mix: a chain with any RGB stage works in RGB, and its Y
stages run on the luma of BT.601 Y'CbCr with the chroma resampled around them (as for a Y model on its own)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidsr import color as colorops
from vidsr.errors import ModelError
from vidsr.models.archs import ModelDescriptor
from vidsr.models.zoo import load_model

ModelSpec = str | Path | ModelDescriptor
_TILING_ORDER = ("supported", "discouraged", "internal")


class _Stage(nn.Module):
    """One model of a chain: meets its size requirements, and takes and gives the chain's colour space."""

    def __init__(self, descriptor: ModelDescriptor, rgb_chain: bool) -> None:
        super().__init__()
        self.model = descriptor.model
        self.descriptor = descriptor
        self.rgb_chain = rgb_chain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.descriptor.color == "rgb":
            return self.descriptor.run(x)
        return self._luma_of_rgb(x) if self.rgb_chain else self._luma(x)

    def _luma(self, y: torch.Tensor) -> torch.Tensor:
        """Full-range luma (what a Y chain carries) through the model, at the levels it was trained on."""
        if self.descriptor.luma_range == "full":
            return self.descriptor.run(y)
        return colorops.luma_from_model(self.descriptor.run(colorops.luma_to_model(y)))

    def _luma_of_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        y, cb, cr = colorops.rgb_to_ycc(rgb, colorops.BT601)
        y = self._luma(y.unsqueeze(1))
        chroma = F.interpolate(torch.stack([cb, cr], 1), size=y.shape[-2:], mode="bicubic", align_corners=False)
        return colorops.ycc_to_rgb(y[:, 0], chroma[:, 0], chroma[:, 1], colorops.BT601)


class ChainNetwork(nn.Module):
    def __init__(self, stages: Sequence[ModelDescriptor], rgb_chain: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(_Stage(stage, rgb_chain) for stage in stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def split_models(text: str) -> list[str]:
    """"A,B" -> ["A", "B"] (VapourSynth and web take a chain as one string); a file whose name holds a comma
    stays whole."""
    if Path(text).is_file() or "," not in text:
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


def load_models(models: ModelSpec | Sequence[ModelSpec], strength: float | None = None) -> ModelDescriptor:
    """One model (name, path or descriptor), or a chain of them run in order; `strength` as `load_model`'s,
    for one model."""
    if isinstance(models, str | Path):
        models = split_models(str(models)) if isinstance(models, str) else [models]
    elif isinstance(models, ModelDescriptor):
        models = [models]
    if strength is not None and (len(models) != 1 or isinstance(models[0], ModelDescriptor)):
        raise ModelError("strength applies to one model given by name or file, not to a chain or a loaded model")
    # A caller's descriptor is copied: an Upscaler moves, casts and fuses its network in place.
    stages = [replace(model, model=copy.deepcopy(model.model)) if isinstance(model, ModelDescriptor)
              else load_model(model, strength) for model in models]
    if not stages:
        raise ModelError("no model given")
    return stages[0] if len(stages) == 1 else chain(stages)


def chain(stages: Sequence[ModelDescriptor]) -> ModelDescriptor:
    """The descriptor of `stages` run in sequence."""
    rgb = any(stage.color == "rgb" for stage in stages)
    scale = 1
    for stage in stages:
        scale *= stage.scale
    precisions = set.intersection(*(set(stage.precisions) for stage in stages))
    licences = sorted({stage.licence for stage in stages if stage.licence})
    return ModelDescriptor(
        model=ChainNetwork(stages, rgb).eval(), arch="+".join(stage.arch for stage in stages), scale=scale,
        in_channels=3 if rgb else 1, out_channels=3 if rgb else 1, color="rgb" if rgb else "y",
        supports_fp16="fp16" in precisions, supports_bf16="bf16" in precisions,
        purpose="SR" if scale > 1 else "Restoration",
        tiling=max((stage.tiling for stage in stages), key=_TILING_ORDER.index),
        source="vidsr" if all(stage.source == "vidsr" for stage in stages) else "spandrel", luma_range="full",
        licence="; ".join(licences) or None,
        hyperparams={"chain": [stage.metadata.get("name", stage.arch) for stage in stages]},
        metadata={"name": "+".join(stage.metadata.get("name", stage.arch) for stage in stages)},
    )
