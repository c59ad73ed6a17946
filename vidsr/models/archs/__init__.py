"""Super-resolution architectures, one module each (spandrel style), and the one place that decides who builds a
checkpoint's network.

`model_from_state_dict`: a checkpoint written by vidsr (its header names the `arch`), or one whose keys match an
architecture only vidsr has, is built by vidsr's own modules, hyper-parameters read from tensor shapes; any other
(third-party) checkpoint goes to spandrel (`vidsr/models/archs/external.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vidsr.errors import ModelError
from vidsr.models.archs import espcn, fsrcnn, rrdbnet, srcnn, srresnet, srvgg, vdsr
from vidsr.models.archs.base import ArchSpec, ModelDescriptor

ARCHS: dict[str, ArchSpec] = {
    module.SPEC.name: module.SPEC for module in (srcnn, fsrcnn, espcn, vdsr, srresnet, rrdbnet, srvgg)
}

def create_model(arch: str, **hyperparams: Any) -> ModelDescriptor:
    """A freshly initialised model of `arch` (for training)."""
    return get_arch(arch).build(**hyperparams)


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHS[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHS))}") from None


def own_arch(state_dict: Mapping[str, torch.Tensor]) -> ArchSpec | None:
    """vidsr's architecture whose key layout the state dict has, if any (community layouts are spandrel's)."""
    keys = set(state_dict)
    return next((spec for spec in ARCHS.values() if spec.matches(keys)), None)


def model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None
) -> ModelDescriptor:
    """Build the model a state dict belongs to and load the weights into it (strictly)."""
    metadata = dict(metadata or {})
    spec = get_arch(metadata["arch"]) if "arch" in metadata else own_arch(state_dict)
    if spec is None:
        from vidsr.models.archs.external import load_external  # spandrel is imported only for third-party files

        descriptor = load_external(state_dict, metadata.get("name"))
        descriptor.metadata = metadata
        return descriptor
    try:
        inferred, converted = spec.infer(state_dict)
    except (KeyError, ValueError, IndexError) as exc:
        raise ModelError(f"{spec.name} checkpoint has unexpected tensors: {exc}") from None
    # shapes are the truth; metadata fills in what shapes cannot tell (activation, interpolation mode...)
    hyperparams = {**metadata.get("hyperparams", {}), **inferred}
    if "scale" not in hyperparams and "scale" in metadata:  # networks whose weights do not reveal the scale
        hyperparams["scale"] = metadata["scale"]
    try:
        descriptor = spec.build(**hyperparams)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:  # a value of the right type that it refuses
        raise ModelError(f"{metadata.get('name', 'checkpoint')}: its header's hyperparams do not build the {spec.name} "
                         f"network ({' '.join(str(exc).split())[:200]})") from None
    try:
        descriptor.model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelError(f"{spec.name} checkpoint does not fit the inferred model: {detail}") from None
    descriptor.model.eval().requires_grad_(False)
    descriptor.metadata = metadata
    return descriptor


__all__ = ["ARCHS", "ArchSpec", "ModelDescriptor", "create_model", "get_arch",
           "model_from_state_dict", "own_arch"]
