"""Network interpolation (ESRGAN): blend the weights of two models of the same architecture, e.g. a
PSNR-oriented model and its GAN fine-tune, trading fidelity for detail without retraining.

Pure interpolation of two loaded models: loading them (`load_model(strength=)`, `blend_files`) is the named-model
layer's (`vidsr.models.zoo`), which imports this module; nothing here loads or saves."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from vidsr.errors import ModelError

if TYPE_CHECKING:  # no torch at import: `vidsr models` imports the zoo, which imports this module
    import torch

    from vidsr.models.archs import ModelDescriptor

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
            blended[key] = tensor_a.lerp(tensor_b.to(tensor_a.dtype), alpha)
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

