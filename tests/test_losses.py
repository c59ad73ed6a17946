"""Losses (VGG perceptual, adversarial, FFT, MS-SSIM) and discriminators on tiny tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vidsr.errors import ModelError
from vidsr.quality.metrics import ssim
from vidsr.train import losses
from vidsr.train.discriminators import UNetDiscriminatorSN, VGGDiscriminator, create_discriminator

# torchvision vgg19().features indices of the 16 convolutions
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def _images(n: int = 2, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _fake_torchvision_vgg19(path, upto: int = 34) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's vgg19 keys (features + classifier) and random values."""
    generator = torch.Generator().manual_seed(1)
    state, channels = {}, 3
    widths = [w for block in losses.VGG19_BLOCKS for w in block]
    for index, width in zip(VGG19_CONV_INDICES, widths, strict=True):
        if index > upto:
            break
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=generator) * 0.1
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.1
        channels = width
    state["classifier.0.weight"] = torch.zeros(4, 4)
    save_file(state, str(path))
    return state


# ---------------------------------------------------------------------------------------------- VGG
def test_vgg19_layout_matches_torchvision_keys() -> None:
    names = losses.vgg19_layer_names()
    assert len(names) == 37 and names[34] == "conv5_4" and names[35] == "relu5_4" and names[36] == "pool5"
    model = losses.VGG19Features(["conv5_4"])
    expected = {f"features.{i}.{p}" for i in VGG19_CONV_INDICES for p in ("weight", "bias")}
    assert set(model.state_dict()) == expected
    assert len(losses.VGG19Features(["relu2_2"]).features) == 9  # built only as deep as needed


def test_vgg19_weights_load_and_layers_select_before_or_after_activation(tmp_path) -> None:
    state = _fake_torchvision_vgg19(tmp_path / "vgg19.safetensors", upto=7)
    model = losses.VGG19Features(["conv2_2", "relu2_2"])
    losses.load_vgg19_weights(model, tmp_path / "vgg19.safetensors")
    assert torch.equal(model.features[7].weight, state["features.7.weight"])
    with torch.no_grad():
        out = model(_images())
    assert out["conv2_2"].shape == (2, 128, 16, 16)
    assert float(out["conv2_2"].min()) < 0
    assert torch.equal(out["relu2_2"], out["conv2_2"].clamp_min(0))


def test_vgg19_missing_or_wrong_weights_are_clear_model_errors(tmp_path) -> None:
    model = losses.VGG19Features(["conv5_4"])
    with pytest.raises(ModelError, match="--vgg-weights"):
        losses.load_vgg19_weights(model, None)
    with pytest.raises(ModelError, match="not found"):
        losses.load_vgg19_weights(model, tmp_path / "absent.pth")
    _fake_torchvision_vgg19(tmp_path / "short.safetensors", upto=7)
    with pytest.raises(ModelError, match="missing features.10.weight"):
        losses.load_vgg19_weights(model, tmp_path / "short.safetensors")
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        losses.VGG19Features(["conv6_1"])


def test_perceptual_loss_trains_the_output_not_vgg(tmp_path) -> None:
    _fake_torchvision_vgg19(tmp_path / "vgg19.safetensors", upto=7)
    loss_fn = losses.PerceptualLoss(tmp_path / "vgg19.safetensors", {"conv1_2": 0.5, "conv2_2": 1.0})
    target = _images(seed=1)
    assert float(loss_fn(target, target)) == 0
    output = _images(seed=2).requires_grad_()
    loss = loss_fn(output, target)
    loss.backward()
    assert loss.item() > 0 and float(output.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    luma = _images(channels=1).requires_grad_()  # Y models: luma repeated to RGB
    loss_fn(luma, _images(channels=1, seed=3)).backward()
    assert luma.grad.shape == luma.shape


# ---------------------------------------------------------------------------------------------- adversarial
def test_relativistic_losses_match_the_esrgan_formula() -> None:
    real = torch.tensor([[1.5], [0.2], [-0.3]])
    fake = torch.tensor([[-1.0], [0.4], [0.1]], requires_grad=True)
    sigmoid, log = torch.sigmoid, torch.log
    d_real = sigmoid(real - fake.mean())  # D_Ra(x_r, x_f)
    d_fake = sigmoid(fake - real.mean())  # D_Ra(x_f, x_r)
    expected_d = (-log(d_real).mean() - log(1 - d_fake).mean()) / 2
    expected_g = (-log(1 - d_real).mean() - log(d_fake).mean()) / 2
    assert losses.discriminator_loss(real, fake, "relativistic").item() == pytest.approx(expected_d.item())
    generator = losses.generator_adversarial_loss(real, fake, "relativistic")
    assert generator.item() == pytest.approx(expected_g.item())
    generator.backward()
    assert float(fake.grad.abs().sum()) > 0


def test_standard_gan_losses_are_binary_cross_entropy() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected_d = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert float(losses.discriminator_loss(real, fake, "standard")) == pytest.approx(float(expected_d))
    expected_g = -torch.log(torch.sigmoid(fake)).mean()
    assert float(losses.generator_adversarial_loss(None, fake, "standard")) == pytest.approx(float(expected_g))
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        losses.discriminator_loss(real, fake, "hinge")
    with pytest.raises(ValueError, match="logits on real images"):
        losses.generator_adversarial_loss(None, fake, "relativistic")


# ---------------------------------------------------------------------------------------------- FFT, MS-SSIM
def test_fft_loss_sees_lost_detail_that_l1_barely_sees() -> None:
    target = _images(size=32)
    blurred = F.avg_pool2d(F.pad(target, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert float(losses.fft_loss(target, target)) == 0
    output = blurred.clone().requires_grad_()
    loss = losses.fft_loss(output, target)
    loss.backward()
    assert float(output.grad.abs().sum()) > 0
    # orthonormal transform: the spectrum's L2 distance equals the image's (Parseval)
    spectrum_l2 = torch.linalg.vector_norm(torch.fft.fft2(blurred - target, norm="ortho"))
    assert float(spectrum_l2) == pytest.approx(float(torch.linalg.vector_norm(blurred - target)), rel=1e-4)


def test_fft_amplitude_loss_ignores_where_detail_is_but_not_how_much() -> None:
    target = _images(size=32)
    shifted = target.roll((3, 5), (2, 3))  # same spectrum amplitudes, every pixel moved
    assert losses.fft_amplitude_loss(shifted, target).item() == pytest.approx(0, abs=1e-6)
    assert losses.fft_loss(shifted, target).item() > 0.01
    output = (0.5 * target + 0.25).requires_grad_()  # half the contrast
    loss = losses.fft_amplitude_loss(output, target)
    loss.backward()
    assert loss.item() > 0.01 and torch.isfinite(output.grad).all()


def test_single_scale_ms_ssim_equals_the_evaluation_ssim() -> None:
    x = _images(1, 1, 20, seed=4)
    y = (x + 0.1 * _images(1, 1, 20, seed=5)).clamp(0, 1)
    expected = ssim(x[0, 0].double().numpy() * 255, y[0, 0].double().numpy() * 255)
    assert float(losses.ms_ssim(x.double(), y.double())) == pytest.approx(expected, rel=1e-5)


def test_ms_ssim_loss_orders_distortions_and_trains() -> None:
    target = F.interpolate(_images(2, 3, 16), size=96, mode="bilinear", align_corners=False)  # structured
    assert float(losses.ms_ssim_loss(target, target)) == pytest.approx(0, abs=1e-6)
    light = target + 0.02 * torch.randn_like(target)
    heavy = target + 0.2 * torch.randn_like(target)
    assert 0 < float(losses.ms_ssim_loss(light, target)) < float(losses.ms_ssim_loss(heavy, target)) <= 1
    output = heavy.clone().requires_grad_()
    losses.ms_ssim_loss(output, target).backward()
    assert torch.isfinite(output.grad).all() and float(output.grad.abs().sum()) > 0


def _edge_with_rim(rim: float) -> torch.Tensor:
    """A vertical step edge (N=1, RGB, 24x24) with a bright rim of `rim` along its bright side."""
    image = torch.full((1, 3, 24, 24), 0.2)
    image[..., 12:] = 0.8
    image[..., 12:14] += rim
    return image


def test_artifact_map_marks_a_halo_the_stable_model_does_not_draw() -> None:
    target = _edge_with_rim(0.0)
    haloed, stable = _edge_with_rim(0.15), target.clone()
    weight = losses.artifact_map(target, haloed, stable)
    assert weight.shape == (1, 1, 24, 24)
    assert weight[..., 12:14].min() > 0 and weight[..., :6].max() == 0  # at the rim, not far from it
    # where the stable (EMA) model is further from the target, the GAN's change is kept: no weight there
    assert losses.artifact_map(target, haloed, _edge_with_rim(0.3))[..., 12:14].max() == 0
    # a smooth error (a brightness offset) has no local variance: not an artefact
    assert losses.artifact_map(target, target + 0.05, stable).max() == pytest.approx(0, abs=1e-9)


def test_artifact_loss_pulls_a_halo_back() -> None:
    target, stable = _edge_with_rim(0.0), _edge_with_rim(0.0)
    output = _edge_with_rim(0.15).requires_grad_(True)
    losses.artifact_loss(target, output, stable).backward()
    assert output.grad[..., 12:14].min() > 0  # descending lowers the rim
    assert output.grad[..., :6].abs().max() == 0 and output.grad[..., 20:].abs().max() == 0


def test_content_loss_combines_weighted_terms(tmp_path) -> None:
    target, output = _images(seed=6), _images(seed=7)
    content = losses.ContentLoss(pixel=2.0, perceptual=0.0, fft=0.5, ms_ssim=0.25)
    terms = content(output, target)
    assert set(terms) == {"pixel", "fft", "ms_ssim"}
    assert float(terms["pixel"]) == pytest.approx(2 * float(F.l1_loss(output, target)))
    assert float(terms["fft"]) == pytest.approx(0.5 * float(losses.fft_loss(output, target)))
    with pytest.raises(ModelError, match="--vgg-weights"):
        losses.ContentLoss(perceptual=1.0)


# ---------------------------------------------------------------------------------------------- discriminators
def test_vgg_discriminator_gives_one_logit_per_image_and_gradients() -> None:
    model = VGGDiscriminator(in_channels=3, num_features=8, input_size=64)
    images = _images(3, 3, 64).requires_grad_()
    logits = model(images)
    assert logits.shape == (3, 1)
    logits.sum().backward()
    assert float(images.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="expects 64x64"):
        model(_images(1, 3, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        VGGDiscriminator(input_size=100)


def test_unet_discriminator_gives_per_pixel_logits_with_spectral_norm() -> None:
    model = create_discriminator("unet", in_channels=1, num_features=8)
    assert isinstance(model, UNetDiscriminatorSN)
    images = _images(2, 1, 24).requires_grad_()
    for _ in range(30):  # power iterations converge in training mode
        logits = model(images)
    assert logits.shape == (2, 1, 24, 24)
    logits.mean().backward()
    assert float(images.grad.abs().sum()) > 0
    first_down = model.down[0]
    singular_values = torch.linalg.svdvals(first_down.weight.detach().flatten(1))
    assert float(singular_values[0]) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(_images(1, 1, 20))
    with pytest.raises(ValueError, match="unknown discriminator"):
        create_discriminator("patchgan")


def test_unet_skip_connections_carry_the_encoder_features() -> None:
    with_skips = UNetDiscriminatorSN(num_features=4).eval()
    without = UNetDiscriminatorSN(num_features=4, skip_connection=False).eval()
    without.load_state_dict(with_skips.state_dict())
    with torch.no_grad():
        images = _images(1, 3, 16)
        assert without(images).shape == (1, 1, 16, 16)
        assert not torch.allclose(with_skips(images), without(images))
