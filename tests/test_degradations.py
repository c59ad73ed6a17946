"""Real-ESRGAN degradations: kernels, each operation's effect, the full chain's shapes and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidsr.quality.resize import imresize
from vidsr.train import degradations as deg


def _texture(channels: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus fine stripes and a little noise: energy at all frequencies, values inside [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = [0.5 + 0.3 * np.sin(2 * np.pi * (xx * (c + 1) + yy)) for c in range(channels)]
    stripes = 0.15 * np.sign(np.sin(np.pi * np.arange(size) / 2))[None, :]
    img = np.stack(base) + stripes + rng.normal(0, 0.02, (channels, size, size))
    return torch.from_numpy(np.clip(img, 0, 1)).float()


def _high_frequency_energy(img: torch.Tensor) -> float:
    spectrum = torch.fft.fft2(img).abs() ** 2
    freqs = torch.fft.fftfreq(img.shape[-1]).abs()
    high = (freqs[None, :] > 0.25) | (freqs[:, None] > 0.25)
    return float(spectrum[..., high].sum())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("kind", deg.KERNEL_TYPES)
def test_every_kernel_type_is_normalised_odd_and_centred(kind: str) -> None:
    config = deg.BlurConfig(kernel_probs={kind: 1.0}, sinc_prob=0.0)
    for seed in range(5):
        kernel = deg.random_blur_kernel(config, _rng(seed))
        size = kernel.shape[0]
        assert kernel.shape == (size, size) and size % 2 == 1 and 7 <= size <= 21
        assert kernel.sum() == pytest.approx(1.0)
        assert kernel.min() >= 0
        assert kernel.argmax() == (size * size) // 2  # peak at the centre
        if kind.startswith(("iso", "generalized_iso", "plateau_iso")):
            np.testing.assert_allclose(kernel, kernel.T, atol=1e-12)  # isotropic: symmetric under transpose


def test_anisotropic_kernel_follows_its_rotation() -> None:
    wide_along_x = deg.gaussian_kernel(21, deg.covariance(4.0, 1.0, 0.0))
    wide_along_y = deg.gaussian_kernel(21, deg.covariance(4.0, 1.0, math.pi / 2))
    assert wide_along_x[10, 14] > 10 * wide_along_x[14, 10]
    np.testing.assert_allclose(wide_along_x, wide_along_y.T, atol=1e-12)


def test_generalized_and_plateau_shapes() -> None:
    cov = deg.covariance(2.0, 2.0, 0.0)
    gaussian = deg.gaussian_kernel(21, cov)
    heavy_tail = deg.generalized_gaussian_kernel(21, cov, beta=0.5)
    flat_top = deg.generalized_gaussian_kernel(21, cov, beta=4.0)
    np.testing.assert_allclose(deg.generalized_gaussian_kernel(21, cov, 1.0), gaussian, atol=1e-12)
    assert heavy_tail[10, 0] / heavy_tail[10, 10] > gaussian[10, 0] / gaussian[10, 10]
    assert flat_top[10, 11] / flat_top[10, 10] > gaussian[10, 11] / gaussian[10, 10]
    plateau = deg.plateau_kernel(21, cov, beta=2.0)
    assert plateau[10, 0] / plateau[10, 10] == pytest.approx(1 / (1 + (100 / 4) ** 2))


def test_sinc_kernel_rings_and_low_passes() -> None:
    kernel = deg.sinc_kernel(21, math.pi / 3)
    assert kernel.sum() == pytest.approx(1.0)
    assert kernel.min() < 0  # negative lobes: the ringing / overshoot it is there to create
    response = np.abs(np.fft.fft2(kernel, s=(64, 64)))
    assert response[0, 0] == pytest.approx(1.0)
    assert response[0, 32] < 0.1  # Nyquist is far above the cutoff pi/3


# ---------------------------------------------------------------------------------------------- operations
def test_blur_lowers_high_frequency_energy() -> None:
    img = _texture()
    blurred = deg.filter2d(img, deg.gaussian_kernel(9, deg.covariance(1.5, 1.5, 0)))
    assert blurred.shape == img.shape
    assert _high_frequency_energy(blurred) < 0.2 * _high_frequency_energy(img)
    assert float(blurred.mean()) == pytest.approx(float(img.mean()), abs=0.01)


@pytest.mark.parametrize("mode", deg.RESIZE_MODES)
def test_resize_modes_give_the_requested_size(mode: str) -> None:
    smooth = deg.filter2d(_texture(), deg.gaussian_kernel(9, deg.covariance(2, 2, 0)))
    out = deg.resize(smooth, (40, 24), mode)
    assert out.shape == (3, 40, 24)
    assert float(out.mean()) == pytest.approx(float(smooth.mean()), abs=0.01)


def test_random_resize_stays_inside_its_range() -> None:
    config = deg.ResizeConfig(probs=(0.0, 1.0, 0.0), scale_range=(0.5, 1.5))
    sizes = {deg.random_resize(_texture(), (64, 64), config, _rng(s)).shape[-1] for s in range(10)}
    assert all(32 <= size <= 64 for size in sizes) and len(sizes) > 1


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_raises_variance_by_sigma_squared(gray: bool) -> None:
    img = torch.full((3, 64, 64), 0.5)
    noisy = deg.gaussian_noise(img, 10 / 255, gray, _rng())
    assert float((noisy - img).std()) == pytest.approx(10 / 255, rel=0.1)
    channel_difference = float((noisy[0] - noisy[1]).abs().max())
    assert (channel_difference == 0) == gray  # grey noise is the same in every channel


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_grows_with_intensity(gray: bool) -> None:
    img = torch.cat([torch.full((3, 32, 64), 0.1), torch.full((3, 32, 64), 0.9)], dim=1)
    img[:, 0, 0] = torch.linspace(0, 1, 3)  # more distinct levels, as real images have
    noise = deg.poisson_noise(img, 1.0, gray, _rng()) - img
    assert float(noise[:, 1:32].std()) < float(noise[:, 32:].std())
    assert (float((noise[0] - noise[2]).abs().max()) < 1e-6) == gray


def test_jpeg_blocks_but_keeps_psnr_sane() -> None:
    img = _texture()
    for channels in (3, 1):
        source = img[:channels]
        low, high = deg.jpeg(source, 20), deg.jpeg(source, 95)
        assert low.shape == source.shape and low.dtype == torch.float32
        assert torch.equal(low, (low * 255).round() / 255)
        assert 20 < _psnr(low, source) < _psnr(high, source)
        assert _block_edge_error(low, source) > _block_edge_error(high, source)


def _block_edge_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean error jump across 8x8 block boundaries (JPEG's signature)."""
    err = out - ref
    jumps = (err[..., :, 8::8] - err[..., :, 7:-1:8]).abs()
    return float(jumps.mean())


def test_unsharp_mask_adds_detail_only_where_there_is_edge() -> None:
    img = _texture()
    sharp = deg.unsharp_mask(img)
    assert sharp.shape == img.shape and float(sharp.min()) >= 0 and float(sharp.max()) <= 1
    assert _high_frequency_energy(sharp) > _high_frequency_energy(img)
    flat = torch.full((3, 64, 64), 0.4)
    assert torch.equal(deg.unsharp_mask(flat), flat)


def test_two_one_dimensional_passes_equal_the_outer_product_kernel() -> None:
    """unsharp_mask blurs with separable passes: rectangular kernels must pad each axis by its own half-size."""
    img = _texture()
    taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    separable = deg.filter2d(deg.filter2d(img, taps[None]), taps[:, None])
    torch.testing.assert_close(separable, deg.filter2d(img, np.outer(taps, taps)))


# ---------------------------------------------------------------------------------------------- codec
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_codec_roundtrip_compresses_like_video(codec: str) -> None:
    clip = [_texture(seed=s)[:, :30, :34] for s in range(4)]  # odd-free but not multiple-of-16 size
    strong = deg.codec_roundtrip(clip, codec, crf=40, gop=4, bframes=1)
    light = deg.codec_roundtrip(clip, codec, crf=12, gop=4, bframes=1)
    assert len(strong) == 4 and strong[0].shape == (3, 30, 34)
    for out, ref, better in zip(strong, clip, light, strict=True):
        assert 18 < _psnr(out, ref) < _psnr(better, ref)


def test_codec_keeps_luma_models_on_the_luma_plane() -> None:
    luma = 16 / 255 + _texture(channels=1) * 219 / 255
    out = deg.codec_roundtrip([luma] * 3, "libx264", crf=10, gop=3, bframes=0)[1]
    assert out.shape == luma.shape
    assert _psnr(out, luma) > 35


def test_random_codec_motion_clip_puts_the_image_at_the_target() -> None:
    img = _texture()
    clip = deg._clip_with_motion(img, frames=5, target=2, velocity=(1, -2))
    assert torch.equal(clip[2], img)
    assert torch.equal(clip[3][:, :-1, 2:], img[:, 1:, :-2])  # one frame later: moved by the velocity
    out = deg.random_codec(img, deg.CodecConfig(prob=1.0, crf_range=(30, 30)), _rng())
    assert out.shape == img.shape and 20 < _psnr(out, img) < 45


# ---------------------------------------------------------------------------------------------- the chain
@pytest.mark.parametrize("channels", [3, 1])
def test_degrade_shapes_range_and_determinism(channels: int) -> None:
    hr = _texture(channels, size=64)
    config = deg.DegradationConfig.video()
    config.codec.prob = 1.0
    lr = deg.degrade(hr, 4, config, _rng(7))
    assert lr.shape == (channels, 16, 16)
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)
    assert torch.equal(lr, deg.degrade(hr, 4, config, _rng(7)))
    assert not torch.equal(lr, deg.degrade(hr, 4, config, _rng(8)))


def test_degrade_is_much_worse_than_a_plain_downscale() -> None:
    hr = _texture(size=64)
    clean = deg.resize(hr, (16, 16), "area")
    distances = [_psnr(deg.degrade(hr, 4, deg.DegradationConfig(), _rng(s)), clean) for s in range(4)]
    assert min(distances) < 30  # every step on: visibly degraded
    assert all(d > 10 for d in distances)  # but still the same picture


def test_make_pair_crops_to_the_scale_and_sharpens_the_target_only_when_asked() -> None:
    hr = _texture(size=66)
    plain = deg.make_pair(hr, 4, deg.DegradationConfig(), _rng())
    assert plain.gt.shape == (3, 64, 64) and plain.lr.shape == (3, 16, 16)
    assert torch.equal(plain.gt, plain.gt_plain)
    sharpened = deg.make_pair(hr, 4, deg.DegradationConfig(sharpen_gt=deg.SharpenConfig(enabled=True)), _rng())
    assert torch.equal(sharpened.gt_plain, hr[:, :64, :64])
    assert not torch.equal(sharpened.gt, sharpened.gt_plain)


def test_config_from_dict_overrides_only_what_is_given() -> None:
    config = deg.DegradationConfig.from_dict({"second_prob": 0.5, "first": {"noise": {"sigma_range": [2, 4]}}})
    assert config.second_prob == 0.5 and config.first.noise.sigma_range == (2, 4)
    assert config.first.noise.gaussian_prob == deg.NoiseConfig().gaussian_prob
    with pytest.raises(ValueError, match="unknown degradation settings: colour"):
        deg.DegradationConfig.from_dict({"colour": 1})


def test_every_step_can_be_switched_off() -> None:
    """All probabilities zero and no resize: the chain reduces to the final resize, an exact area downscale."""
    off = deg.StageConfig(
        blur=deg.BlurConfig(prob=0.0),
        resize=deg.ResizeConfig(probs=(0, 0, 1), modes=("area",)),
        noise=deg.NoiseConfig(gaussian_prob=1.0, sigma_range=(0, 0), gray_prob=0.0),
        jpeg=deg.JpegConfig(prob=0.0),
    )
    config = deg.DegradationConfig(
        first=off, second=off, final_sinc=deg.SincConfig(prob=0.0), final_resize_modes=("area",)
    )
    hr = _texture(size=64)
    lr = deg.degrade(hr, 2, config, _rng())
    expected = deg.resize(hr, (32, 32), "area")
    assert float((lr - expected).abs().max()) <= 0.5 / 255 + 1e-6  # only the final 8-bit rounding


def test_clean_pairs_are_the_plain_bicubic_downscale_and_off_by_default() -> None:
    hr = _texture(size=64)
    clean = deg.degrade(hr, 4, deg.DegradationConfig(clean_prob=1.0), _rng())
    assert torch.equal(clean, imresize(hr, size=(16, 16), quantize=True))
    mixed = [deg.degrade(hr, 4, deg.DegradationConfig(clean_prob=0.5), _rng(s)) for s in range(16)]
    assert 0 < sum(torch.equal(lr, clean) for lr in mixed) < 16
    # 0 draws nothing: the pairs made before the setting existed stay the same
    assert torch.equal(deg.degrade(hr, 4, deg.DegradationConfig(), _rng(3)),
                       deg.degrade(hr, 4, deg.DegradationConfig(clean_prob=0.0), _rng(3)))
