"""Network interpolation (ESRGAN): blend the weights of two models of the same architecture, e.g. a
PSNR-oriented model and its GAN fine-tune, trading fidelity for detail without retraining."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from vidsr.errors import ModelError
from vidsr.models.archs import ModelDescriptor
from vidsr.models.checkpoint import save_checkpoint
from vidsr.models.zoo import load_model

StateDict = dict[str, torch.Tensor]


def blend_state_dicts(a: StateDict, b: StateDict, alpha: float) -> StateDict:
    """`(1 - alpha) * a + alpha * b` for every floating-point tensor; exact copies of `a` at 0 and `b` at 1.

    Integer tensors (BatchNorm counters) are taken from `a`.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise ModelError(f"the models have different layers ({only[0]} is in one only); blend needs one architecture")
    blended = {}
    for key, tensor_a in a.items():
        tensor_b = b[key]
        if tensor_a.shape != tensor_b.shape:
            raise ModelError(f"{key} is {tuple(tensor_a.shape)} in one model and {tuple(tensor_b.shape)} in the other")
        if tensor_a.is_floating_point():
            # lerp evaluates from the nearer end, so alpha 0 and 1 return the inputs bit for bit
            blended[key] = torch.lerp(tensor_a, tensor_b.to(tensor_a.dtype), alpha)
        else:
            blended[key] = tensor_a.clone()
    return blended


def blend_models(a: ModelDescriptor, b: ModelDescriptor, alpha: float) -> ModelDescriptor:
    """A new descriptor with a's architecture and the interpolated weights (a and b are left unchanged)."""
    if (a.arch, a.hyperparams) != (b.arch, b.hyperparams):
        raise ModelError(f"cannot blend {a.arch} {a.hyperparams} with {b.arch} {b.hyperparams}")
    result = copy.deepcopy(a)
    result.model.load_state_dict(blend_state_dicts(a.model.state_dict(), b.model.state_dict(), alpha))
    result.metadata = {"blend": {"a": a.metadata.get("name"), "b": b.metadata.get("name"), "alpha": alpha}}
    return result


def blend_files(a: str | Path, b: str | Path, alpha: float, output: str | Path) -> Path:
    """Blend two models (bundled names or weight files) and save the result as safetensors."""
    blended = blend_models(load_model(a), load_model(b), alpha)
    return save_checkpoint(output, blended, **blended.metadata)
