"""Convolution + activation in one oneDNN call, for inference on the CPU.

In eager PyTorch an activation after a convolution is a second pass over the whole feature map; on the CPU an
accurate `tanh` over ESPCN's 64 + 32 channels costs half as much as its convolutions. oneDNN applies the
activation as the convolution writes its output (the op inductor uses for the same fusion), so the pass
disappears: ESPCN x2 on 640x360 in bf16 went from 71 to 36 ms a frame on a 2-core AVX-512 CPU
(docs/BENCHMARKS.md). Only `nn.Sequential` pairs are fused, state-dict keys stay as they were, and the result is
checked against the unfused model on a probe input, so a model whose forward uses a Sequential's members one
by one keeps its original modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

log = logging.getLogger("vidsr")

# activation -> (oneDNN post-op, its scalars, its algorithm)
_POST_OPS: dict[type[nn.Module], Callable[[nn.Module], tuple[str, list[float], str]]] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.Tanh: lambda m: ("tanh", [], ""),
    nn.Sigmoid: lambda m: ("sigmoid", [], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.Hardswish: lambda m: ("hardswish", [], ""),
    nn.Hardsigmoid: lambda m: ("hardsigmoid", [], ""),
    nn.LeakyReLU: lambda m: ("leaky_relu", [m.negative_slope], ""),
    nn.Hardtanh: lambda m: ("hardtanh", [m.min_val, m.max_val], ""),
    nn.ReLU6: lambda m: ("hardtanh", [0.0, 6.0], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
}
FUSABLE_DTYPES = (torch.float32, torch.bfloat16)


class FusedConv2d(nn.Conv2d):
    """A `Conv2d` followed by `activation`, run as one oneDNN convolution with a post-op on the CPU without
    autograd; anywhere else (CUDA, training, another dtype) as the two modules it replaces. It shares the
    convolution's parameters, under the same names."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.activation = activation
        self.post_op, self.scalars, self.algorithm = _POST_OPS[type(activation)](activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs_fused(x, self.weight):
            return self.activation(super().forward(x))
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups,
            self.post_op, self.scalars, self.algorithm)


def _runs_fused(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Eager CPU inference in fp32 / bf16 only: a trace (ONNX export, TorchScript) must see the plain modules."""
    tracing = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and not tracing
            and x.dtype == weight.dtype and x.dtype in FUSABLE_DTYPES)


def _fusable(conv: nn.Module, activation: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(activation) in _POST_OPS and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and not parametrize.is_parametrized(conv)
            and not conv._forward_hooks and not conv._forward_pre_hooks)


def _fuse_sequentials(model: nn.Module) -> list[tuple[nn.Sequential, int, nn.Module, nn.Module]]:
    """Fuse every (Conv2d, activation) pair inside an nn.Sequential; returns what was replaced, to undo."""
    replaced = []
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequential) - 1):
            conv, activation = sequential[i], sequential[i + 1]
            if _fusable(conv, activation):
                sequential[i], sequential[i + 1] = FusedConv2d(conv, activation), nn.Identity()
                replaced.append((sequential, i, conv, activation))
    return replaced


def fuse_conv_activations(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                          probe: torch.Tensor) -> int:
    """Fuse `model`'s convolution + activation pairs in place, if oneDNN can run them for `probe`'s dtype on
    this CPU and `forward(probe)` (the model's call, on a small input) gives the same result as before.
    Returns how many pairs were fused."""
    if probe.dtype not in FUSABLE_DTYPES or probe.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return 0
    replaced: list[tuple[nn.Sequential, int, nn.Module, nn.Module]] = []
    try:
        with torch.inference_mode():
            expected = forward(probe).float()
            replaced = _fuse_sequentials(model)
            same = bool(replaced) and _agree(forward(probe).float(), expected, probe.dtype)
    except Exception as exc:  # noqa: BLE001 - a model the probe cannot run, or oneDNN refusing: run it unfused
        log.debug("conv + activation fusion not used: %s", exc)
        same = False
    if not same:
        for sequential, i, conv, activation in replaced:
            sequential[i], sequential[i + 1] = conv, activation
        return 0
    return len(replaced)


def _agree(fused: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> bool:
    """fp32 paths agree to rounding; bf16 keeps 8 bits of mantissa, so its intermediates round differently
    between the paths: a small mean difference, an occasional larger one. A member left out is far more."""
    if fused.shape != expected.shape:
        return False
    difference = (fused - expected).abs()
    mean_limit, max_limit = (5e-3, 0.1) if dtype == torch.bfloat16 else (1e-5, 1e-3)
    return bool(difference.mean() <= mean_limit and difference.max() <= max_limit)
