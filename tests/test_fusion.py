"""Convolution + activation fused into one oneDNN call for CPU inference (vidsr/compute/fusion.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidsr.compute.fusion import FusedConv2d, fuse_conv_activations
from vidsr.compute.upscaler import Upscaler, cpu_has_native_bf16
from vidsr.models.archs import create_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")

ACTIVATIONS = [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.SiLU(), nn.Hardswish(), nn.Hardsigmoid(), nn.LeakyReLU(0.2),
               nn.Hardtanh(-0.5, 0.7), nn.ReLU6(), nn.GELU(), nn.GELU("tanh")]
DTYPES = [torch.float32] + [torch.bfloat16] * cpu_has_native_bf16()


def network(activation: nn.Module, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=(1, 2), dilation=(1, 2), bias=bias), activation,
                         nn.Conv2d(8, 8, 3, padding=1, groups=2), type(activation)(), nn.Conv2d(8, 3, 1))


def fused_copy(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, int]:
    fused = network(model[1]).to(probe.dtype)
    fused.load_state_dict(model.state_dict())
    return fused, fuse_conv_activations(fused, fused, probe)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: repr(a))
def test_every_activation_fuses_and_matches(activation: nn.Module, dtype: torch.dtype) -> None:
    model = network(activation).to(dtype).to(memory_format=torch.channels_last)
    x = (torch.randn(2, 3, 19, 23) * 2).to(dtype)  # odd sizes, both layouts
    fused, count = fused_copy(model, x[:1])
    assert count == 2
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == 2
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            got, want = fused(x.contiguous(memory_format=layout)).float(), model(x).float()
            assert torch.allclose(got, want, atol=1e-4 if dtype == torch.float32 else 0.05)


def test_state_dict_keys_and_tensors_stay() -> None:
    model = network(nn.Tanh(), bias=False)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    assert fuse_conv_activations(model, model, torch.rand(1, 3, 16, 16)) == 2
    assert list(model.state_dict()) == list(keys)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in keys.items())


def test_training_and_autograd_run_the_original_modules() -> None:
    model = network(nn.LeakyReLU(0.1))
    reference = network(nn.LeakyReLU(0.1))
    fuse_conv_activations(model, model, torch.rand(1, 3, 16, 16))
    x = torch.randn(1, 3, 12, 12, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and torch.allclose(model(x), reference(x), atol=1e-6)


def test_a_trace_of_a_fused_model_sees_the_plain_modules() -> None:
    """ONNX export and TorchScript trace the shared model an Upscaler has fused: they must not meet the oneDNN op."""
    model = network(nn.Tanh())
    reference = network(nn.Tanh())
    fuse_conv_activations(model, model, torch.rand(1, 3, 16, 16))
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), reference(x), atol=1e-6)
        assert "mkldnn" not in str(traced.inlined_graph)


class PreActivationSkip(nn.Module):
    """Uses its Sequential's members one by one: the convolution's output before the activation is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self.body[0](x)
        return self.body[1](before) - before


def test_a_model_that_needs_the_unfused_modules_keeps_them() -> None:
    torch.manual_seed(0)
    model = PreActivationSkip()
    assert fuse_conv_activations(model, model, torch.randn(1, 3, 16, 16)) == 0
    assert type(model.body[0]) is nn.Conv2d and type(model.body[1]) is nn.ReLU


def test_fp16_and_other_conv_kinds_are_left_alone() -> None:
    model = network(nn.ReLU())
    assert fuse_conv_activations(model, model, torch.rand(1, 3, 16, 16, dtype=torch.float16)) == 0
    circular = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"), nn.ReLU())
    same = nn.Sequential(nn.Conv2d(3, 3, 3, padding="same"), nn.ReLU())
    for model in (circular, same):
        assert fuse_conv_activations(model, model, torch.rand(1, 3, 16, 16)) == 0


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_the_cpu_upscaler_fuses_espcn_and_gives_the_same_frames(precision: str) -> None:
    torch.manual_seed(0)
    descriptor = create_model("espcn", scale=2)
    plain = {k: v.clone() for k, v in descriptor.model.state_dict().items()}
    upscaler = Upscaler(descriptor, device="cpu", precision=precision)
    assert sum(isinstance(m, FusedConv2d) for m in upscaler.model.modules()) == 2
    reference = create_model("espcn", scale=2)
    reference.model.load_state_dict(plain)
    x = torch.rand(2, 1, 37, 29)
    with torch.inference_mode():
        want = reference.model.to(upscaler.dtype)(x.to(upscaler.dtype)).float().clamp(0, 1)
    got = upscaler.run_model(x).clamp(0, 1)
    assert (got * 255).round().sub((want * 255).round()).abs().max() <= (0 if precision == "fp32" else 2)
