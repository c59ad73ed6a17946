"""Architectures: shapes, hyper-parameter inference from state dicts, cost figures (third-party: test_spandrel)."""

from __future__ import annotations

import pytest
import torch

from vidsr.errors import ModelError
from vidsr.models.archs import ARCHS, create_model, model_from_state_dict
from vidsr.models.archs.base import count_conv_macs

# Small instances of every architecture (hyper-parameters away from the defaults so that inference is tested).
TINY = {
    "srcnn": {"scale": 3, "channels": 1, "features": 8, "mid_features": 4},
    "fsrcnn": {"scale": 3, "channels": 1, "d": 8, "s": 4, "m": 2},
    "espcn": {"scale": 3, "channels": 3, "features": 8, "mid_features": 4},
    "vdsr": {"scale": 2, "channels": 1, "features": 8, "depth": 5},
    "srresnet": {"scale": 3, "channels": 3, "features": 8, "blocks": 2},
    "rrdbnet": {"scale": 4, "features": 8, "growth": 4, "blocks": 2},
    "srvgg": {"scale": 2, "channels": 3, "features": 8, "convs": 3},
}


def random_weights(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in model.state_dict().items()}


def run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_state_dict_round_trip_infers_hyperparams(arch: str) -> None:
    built = create_model(arch, **TINY[arch])
    weights = random_weights(built.model)
    # only the scale of pre-upsampling / transposed-conv networks is not in the shapes: it travels as metadata,
    # with the arch (vidsr's header: RRDBNet and Compact files without it are third-party, read by spandrel)
    loaded = model_from_state_dict(weights, {"arch": arch, "scale": built.scale})
    assert loaded.arch == arch
    assert loaded.hyperparams == built.hyperparams
    built.model.load_state_dict(weights)
    x = torch.rand(1, built.in_channels, 8, 12)
    out = run(loaded.model, x)
    assert out.shape == (1, built.out_channels, 8 * built.scale, 12 * built.scale)
    assert torch.equal(out, run(built.model, x))


def test_every_arch_is_covered() -> None:
    assert set(TINY) == set(ARCHS)


def test_descriptor_facts() -> None:
    espcn = create_model("espcn", scale=2, channels=1)
    assert (espcn.color, espcn.in_channels, espcn.size_multiple) == ("y", 1, 1)
    assert espcn.params == 1 * 64 * 25 + 64 + 64 * 32 * 9 + 32 + 32 * 4 * 9 + 4
    # all convs run at 960x540 for a 1080p output; MACs per LR pixel = weights without biases
    macs_per_pixel = 64 * 25 + 64 * 32 * 9 + 32 * 4 * 9
    assert espcn.gmacs() == pytest.approx(macs_per_pixel * 960 * 540 / 1e9)
    rgb = create_model("rrdbnet", scale=2, features=8, growth=4, blocks=1)
    assert (rgb.color, rgb.size_multiple) == ("rgb", 2)


def test_transposed_conv_macs_counted_per_input_pixel() -> None:
    layer = torch.nn.ConvTranspose2d(4, 2, 9, stride=3, padding=4, output_padding=2)
    assert count_conv_macs(layer, torch.zeros(1, 4, 5, 5)) == 25 * 4 * 2 * 81


def test_rrdbnet_x2plus_pixel_unshuffle_detected() -> None:
    built = create_model("rrdbnet", scale=2, features=8, growth=4, blocks=1)
    weights = random_weights(built.model)
    assert weights["conv_first.weight"].shape[1] == 12
    loaded = model_from_state_dict(weights, {"arch": "rrdbnet"})
    assert (loaded.scale, loaded.in_channels, loaded.size_multiple) == (2, 3, 2)
    assert run(loaded.model, torch.rand(1, 3, 6, 8)).shape == (1, 3, 12, 16)


def test_srvgg_infers_conv_count_and_scale() -> None:
    weights = random_weights(create_model("srvgg", scale=4, channels=3, features=16, convs=5).model)
    loaded = model_from_state_dict(weights, {"arch": "srvgg"})
    assert (loaded.hyperparams["convs"], loaded.scale, loaded.hyperparams["features"]) == (5, 4, 16)


def test_unknown_layout_is_one_line_naming_tensors() -> None:
    weights = random_weights(create_model("srresnet", scale=2, features=8, blocks=1).model)
    del weights["conv_hr.weight"]
    with pytest.raises(ModelError, match=r"unknown architecture: .*conv_first\.weight \(8, 3, 3, 3\)") as info:
        model_from_state_dict(weights)
    assert "\n" not in str(info.value)


def test_wrong_shapes_are_a_model_error() -> None:
    weights = random_weights(create_model("espcn", scale=2, channels=1, features=8, mid_features=4).model)
    weights["first_part.2.weight"] = torch.zeros(4, 5, 3, 3)
    with pytest.raises(ModelError, match="espcn"):
        model_from_state_dict(weights)
