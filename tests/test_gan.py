"""GAN fine-tuning on CPU (few steps, exact resume) and network interpolation (`vidsr blend`)."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from vidsr.cli import main as cli_main
from vidsr.errors import InputError, ModelError
from vidsr.models.archs import create_model
from vidsr.models.blend import blend_models, blend_state_dicts
from vidsr.models.checkpoint import load_checkpoint, save_checkpoint
from vidsr.models.zoo import load_model, model_card
from vidsr.train.config import TrainConfig
from vidsr.train.gan import GANSettings, GANTrainer, degradation_config, load_gan_config
from vidsr.train.teachers import input_tone, teacher_output

HYPERPARAMS = {"channels": 3, "features": 8, "mid_features": 8}


def _write_images(folder, count: int = 2, size: int = 48) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for index in range(count):
        base = np.stack([np.sin(2 * np.pi * (xx * (c + 2 + index) + yy)) for c in range(3)], axis=-1)
        img = 127 + 100 * base + rng.normal(0, 10, base.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{index}.png")


@pytest.fixture
def setup(tmp_path):
    """Training images and a 'stage 1' ESPCN checkpoint to fine-tune from."""
    _write_images(tmp_path / "hr")
    torch.manual_seed(0)
    pretrained = save_checkpoint(tmp_path / "psnr.safetensors", create_model("espcn", scale=2, **HYPERPARAMS))
    config = TrainConfig(
        arch="espcn", scale=2, hyperparams=HYPERPARAMS, train_dirs=[str(tmp_path / "hr")],
        cache_dir=str(tmp_path / "cache"), patch_size=16, batch_size=2, iterations=3, lr=1e-3, ema_decay=0.9,
        device="cpu", threads=1, log_every=1, checkpoint_minutes=1e9, init_from=str(pretrained),
    )
    gan = GANSettings(d_features=8, perceptual_weight=0.0, fft_weight=0.1, ms_ssim_weight=0.1)
    return tmp_path, config, gan


def _run(config: TrainConfig, gan: GANSettings, out_dir, iterations: int) -> GANTrainer:
    trainer = GANTrainer(replace(config, out_dir=str(out_dir), iterations=iterations), gan)
    trainer.run(progress=False)
    return trainer


def test_gan_steps_change_the_generator_from_its_pretrained_start(setup) -> None:
    tmp_path, config, gan = setup
    start, _ = load_checkpoint(config.init_from)
    trainer = _run(config, gan, tmp_path / "run", iterations=3)
    weights = trainer.model.state_dict()
    assert all(not torch.equal(weights[key], start[key]) for key in start)
    assert all(torch.isfinite(value).all() for value in weights.values())
    with (tmp_path / "run" / "gan_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["iteration"] for row in rows] == ["1", "2", "3"]
    assert all(float(row["adversarial"]) > 0 and float(row["fft"]) > 0 and row["perceptual"] == "" for row in rows)
    exported = load_model(tmp_path / "run" / "last.safetensors")
    assert exported.metadata["recipe"]["stage"] == "gan"
    assert exported.metadata["recipe"]["gan"]["discriminator"] == "vgg"
    card = model_card(tmp_path / "run" / "last.safetensors")
    assert ("GAN stage: L1 x0.01, FFT x0.1, MS-SSIM x0.1, relativistic GAN x0.005 (vgg discriminator), "
            "on bicubic pairs") in card
    assert torch.equal(exported.model.state_dict()["first_part.0.weight"], trainer.ema.model.first_part[0].weight)


def test_gan_resume_continues_exactly(setup) -> None:
    """Real-ESRGAN style: U-Net discriminator, degraded pairs with codec round trips, standard GAN loss.
    The uninterrupted run degrades in 2 worker processes, the interrupted one in-process: same batches."""
    tmp_path, config, gan = setup
    gan = replace(gan, discriminator="unet", adversarial="standard", degradation={"preset": "video"})
    config = replace(config, log_every=3)  # the interruption falls inside a logging window
    straight = _run(config, replace(gan, degradation_workers=2), tmp_path / "straight", iterations=4)
    GANTrainer(replace(config, out_dir=str(tmp_path / "split"), iterations=4), gan).run(progress=False, until=2)
    resumed = _run(config, gan, tmp_path / "split", iterations=4)
    assert resumed.iteration == 4
    for part in ("model", "discriminator", "optimizer", "d_optimizer"):
        a, b = straight._state()[part], resumed._state()[part]
        assert _flatten(a) == _flatten(b), part
    assert _flatten(straight.ema.model.state_dict()) == _flatten(resumed.ema.model.state_dict())
    log = (tmp_path / "straight" / "gan_log.csv").read_text()
    assert [line.split(",")[0] for line in log.splitlines()] == ["iteration", "3", "4"]
    assert (tmp_path / "split" / "gan_log.csv").read_text() == log


def _flatten(state) -> list:
    """Nested state (tensors, dicts, lists, numbers) as a comparable list with tensors as exact bytes."""
    if isinstance(state, torch.Tensor):
        return [tuple(state.shape), state.detach().numpy().tobytes()]
    if isinstance(state, dict):
        return [[key, _flatten(value)] for key, value in sorted(state.items(), key=lambda kv: str(kv[0]))]
    if isinstance(state, list | tuple):
        return [_flatten(value) for value in state]
    return [state]


def test_adversarial_weight_zero_is_the_real_esrnet_stage(setup) -> None:
    """L1 on degraded pairs without a discriminator: Real-ESRGAN's first stage."""
    tmp_path, config, gan = setup
    gan = replace(gan, adversarial_weight=0.0, pixel_weight=1.0, degradation="realesrgan")
    trainer = GANTrainer(replace(config, out_dir=str(tmp_path / "run"), iterations=2), gan)
    untouched = {key: value.clone() for key, value in trainer.discriminator.state_dict().items()}
    start = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    trainer.run(progress=False)
    assert all(torch.equal(value, untouched[key]) for key, value in trainer.discriminator.state_dict().items())
    assert not torch.equal(trainer.model.state_dict()["first_part.0.weight"], start["first_part.0.weight"])
    with (tmp_path / "run" / "gan_log.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["pixel"]) > 0 and row["adversarial"] == "" and row["d_loss"] == ""
    card = model_card(tmp_path / "run" / "last.safetensors")
    assert ("Real-ESRNet stage (no discriminator): L1 x1, FFT x0.1, MS-SSIM x0.1, "
            "on pairs degraded by the realesrgan chain") in card


def test_teachers_replace_the_target_with_their_blended_output(setup) -> None:
    """Distillation: the target is (1 - alpha) * first teacher + alpha * second teacher on the same input."""
    tmp_path, config, gan = setup
    gan = replace(gan, adversarial_weight=0.0, pixel_weight=1.0, fft_weight=0.0, ms_ssim_weight=0.0)
    torch.manual_seed(5)
    other = save_checkpoint(tmp_path / "other.safetensors", create_model("espcn", scale=2, **HYPERPARAMS))
    trainer = GANTrainer(replace(config, out_dir=str(tmp_path / "pair")),
                         replace(gan, teachers=[config.init_from, str(other)], teacher_alpha=0.25))
    lr = torch.rand(2, 3, 12, 12)
    with torch.no_grad(), trainer.numerics.autocast():
        first, second = (load_model(path).model(lr).float() for path in (config.init_from, other))
        plain = [teacher_output(load_model(path), lr, 2) for path in (config.init_from, other)]
    target = trainer._teach(lr)
    torch.testing.assert_close(target, 0.75 * plain[0] + 0.25 * plain[1], atol=1e-6, rtol=0)
    # the teachers see the patch's surroundings mirrored in: their zero padding leaves the rim alone, and
    # inside, beyond ESPCN's reach of 4 pixels, the output is their plain output
    inside = (..., slice(8, -8), slice(8, -8))
    torch.testing.assert_close(target[inside], (0.75 * first + 0.25 * second)[inside], atol=1e-6, rtol=0)
    assert not torch.allclose(target[..., :2, :], (0.75 * first + 0.25 * second)[..., :2, :], atol=1e-3)
    _, target, _ = trainer._batch()
    assert target.shape[-1] == 2 * config.patch_size

    # towards another teacher the student moves
    start, _ = load_checkpoint(config.init_from)
    moved = _run(config, replace(gan, teachers=[str(other)]), tmp_path / "other", iterations=2)
    assert not torch.equal(moved.model.state_dict()["first_part.0.weight"], start["first_part.0.weight"])
    card = model_card(tmp_path / "other" / "last.safetensors")
    assert f"distilled (no discriminator) towards the output of {other}: L1 x1" in card


def test_input_tone_keeps_the_teachers_detail_on_the_inputs_brightness() -> None:
    """A teacher that darkens by 8 levels and adds texture: the target keeps the texture, not the darkening."""
    torch.manual_seed(0)
    lr = 0.3 + 0.4 * torch.rand(2, 3, 6, 6).repeat_interleave(4, -1).repeat_interleave(4, -2)
    upscaled = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    texture = 0.05 * torch.sign(torch.randn(2, 3, 48, 48))  # every other pixel's sign: far above the low-pass
    teacher = upscaled - 8 / 255 + texture
    target = input_tone(teacher, lr, 2)
    assert abs(teacher.mean() - upscaled.mean()) > 7.5 / 255 and abs(target.mean() - upscaled.mean()) < 0.3 / 255
    detail = target - upscaled
    assert torch.corrcoef(torch.stack([detail.flatten(), texture.flatten()]))[0, 1] > 0.95


def test_a_distilled_gan_stage_on_the_inputs_tone_says_so_on_its_card(setup, tmp_path) -> None:
    """teacher_tone = input: the targets (and the discriminator's real images) come from `input_tone`."""
    _, config, gan = setup
    gan = replace(gan, adversarial_weight=0.1, pixel_weight=1.0, fft_weight=0.0, ms_ssim_weight=0.0,
                  adversarial="standard", discriminator="unet", teachers=[config.init_from], teacher_tone="input")
    trainer = GANTrainer(replace(config, out_dir=str(tmp_path / "toned")), gan)
    torch.manual_seed(3)
    lr, target, _ = trainer._batch()
    torch.testing.assert_close(target, input_tone(trainer._teach(lr), lr, 2))
    trainer.run(progress=False)
    card = model_card(tmp_path / "toned" / "last.safetensors")
    assert f"distilled towards the output of {config.init_from} on the input's tone: L1 x1, standard GAN" in card


def test_teachers_must_fit_the_trained_model(setup) -> None:
    tmp_path, config, gan = setup
    gan = replace(gan, adversarial_weight=0.0, pixel_weight=1.0)
    x3 = save_checkpoint(tmp_path / "x3.safetensors", create_model("espcn", scale=3, **HYPERPARAMS))
    with pytest.raises(ModelError, match="teacher .*x3.safetensors is x3, 3 -> 3 channels; the config trains x4"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "a"), scale=4), replace(gan, teachers=[str(x3)]))
    with pytest.raises(InputError, match="teachers: one model, or two"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "b")), replace(gan, teachers=[config.init_from] * 3))
    with pytest.raises(InputError, match="teachers: one model, or two"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "c")), replace(gan, teachers=["a"], teacher_alpha=2))


def test_artifact_loss_trains_against_the_ema_generator(setup) -> None:
    tmp_path, config, gan = setup
    _run(config, replace(gan, artifact_weight=1.0), tmp_path / "run", iterations=2)
    with (tmp_path / "run" / "gan_log.csv").open() as handle:
        assert all(float(row["artifacts"]) >= 0 for row in csv.DictReader(handle))
    assert "LDL artefacts x1" in model_card(tmp_path / "run" / "last.safetensors")
    with pytest.raises(InputError, match="ema_decay"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "other"), ema_decay=0.0), replace(gan, artifact_weight=1.0))


def test_perceptual_loss_runs_with_local_vgg_weights(setup) -> None:
    from tests.test_losses import _fake_torchvision_vgg19

    tmp_path, config, gan = setup
    _fake_torchvision_vgg19(tmp_path / "vgg19.safetensors", upto=7)
    gan = replace(gan, perceptual_weight=1.0, vgg_weights=str(tmp_path / "vgg19.safetensors"),
                  vgg_layers={"conv2_2": 1.0})
    _run(config, gan, tmp_path / "run", iterations=1)
    with (tmp_path / "run" / "gan_log.csv").open() as handle:
        assert float(next(csv.DictReader(handle))["perceptual"]) > 0
    with pytest.raises(ModelError, match="--vgg-weights"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "other")), replace(gan, vgg_weights=None))


def test_gan_refuses_a_missing_or_different_starting_model(setup) -> None:
    tmp_path, config, gan = setup
    with pytest.raises(InputError, match="set init_from"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "a"), init_from=None), gan)
    other = save_checkpoint(tmp_path / "other.safetensors", create_model("espcn", scale=2, channels=3, features=16))
    with pytest.raises(ModelError, match="the config trains espcn"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "b"), init_from=str(other)), gan)
    with pytest.raises(InputError, match="unknown adversarial loss 'hinge'"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "d")), replace(gan, adversarial="hinge"))
    with pytest.raises(InputError, match="multiple of 32"):
        GANTrainer(replace(config, out_dir=str(tmp_path / "c"), patch_size=20), gan)


def test_real_esrnet_stage_may_start_from_another_scale_the_gan_stage_may_not(setup) -> None:
    tmp_path, config, gan = setup
    x4 = replace(config, scale=4, patch_size=8)
    with pytest.raises(ModelError, match="the config trains espcn"):
        GANTrainer(replace(x4, out_dir=str(tmp_path / "gan")), gan)
    start, _ = load_checkpoint(config.init_from)
    trainer = GANTrainer(replace(x4, out_dir=str(tmp_path / "esrnet")), replace(gan, adversarial_weight=0.0))
    copied = {key for key, value in trainer.model.state_dict().items() if torch.equal(value, start.get(key))}
    assert copied and copied != set(start)  # the body is the x2 model's; the x4 tail is new


def test_gan_config_file_splits_the_gan_table(tmp_path) -> None:
    path = tmp_path / "gan.toml"
    path.write_text('arch = "espcn"\nscale = 4\n[gan]\ndiscriminator = "unet"\n[gan.degradation]\npreset = "video"\n')
    config, gan = load_gan_config(path, vgg_weights="vgg.pth", iterations=7, device=None, init_from="psnr.pth")
    assert (config.arch, config.scale, config.iterations, config.init_from) == ("espcn", 4, 7, "psnr.pth")
    assert (gan.discriminator, gan.vgg_weights) == ("unet", "vgg.pth")
    assert degradation_config(gan.degradation).codec.prob > 0
    tuned = degradation_config({"preset": "video", "codec": {"crf_range": [30, 40]}})
    assert tuned.codec.crf_range == (30, 40) and tuned.codec.prob == degradation_config("video").codec.prob
    path.write_text('arch = "espcn"\nout_dir = "runs/a"\nloss = "l1"\n')  # flags beat the file's values
    config, gan = load_gan_config(path, out_dir="runs/b", loss="mse", lr=None)
    assert (config.out_dir, config.loss, gan) == ("runs/b", "mse", None)
    path.write_text("[gan]\ndiscriminatr = 'vgg'\n")
    with pytest.raises(InputError, match="unknown \\[gan\\] keys: discriminatr"):
        load_gan_config(path)


# ---------------------------------------------------------------------------------------------- blend
def _two_models(features: int = 8):
    torch.manual_seed(1)
    a = create_model("espcn", scale=2, channels=3, features=features)
    torch.manual_seed(2)
    b = create_model("espcn", scale=2, channels=3, features=features)
    return a, b


def test_blend_endpoints_are_exact_and_the_midpoint_is_the_mean() -> None:
    a, b = _two_models()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for key in sa:
        assert torch.equal(blend_state_dicts(sa, sb, 0.0)[key], sa[key])
        assert torch.equal(blend_state_dicts(sa, sb, 1.0)[key], sb[key])
        torch.testing.assert_close(blend_state_dicts(sa, sb, 0.5)[key], (sa[key] + sb[key]) / 2)
    counters = {"bn.num_batches_tracked": torch.tensor(5)}
    assert blend_state_dicts(counters, {"bn.num_batches_tracked": torch.tensor(9)}, 0.5)["bn.num_batches_tracked"] == 5
    with pytest.raises(ValueError, match="alpha"):
        blend_state_dicts(sa, sb, 1.5)


def test_blend_refuses_different_architectures() -> None:
    a, _ = _two_models()
    _, wider = _two_models(features=16)
    with pytest.raises(ModelError, match="cannot blend"):
        blend_models(a, wider, 0.5)
    with pytest.raises(ModelError, match="different layers"):
        blend_state_dicts({"x": torch.zeros(1)}, {"y": torch.zeros(1)}, 0.5)


def test_blend_command_writes_a_loadable_interpolated_model(tmp_path, capsys) -> None:
    a, b = _two_models()
    path_a = save_checkpoint(tmp_path / "psnr.safetensors", a)
    path_b = save_checkpoint(tmp_path / "gan.safetensors", b)
    out = tmp_path / "blend.safetensors"
    assert cli_main(["blend", str(path_a), str(path_b), "--alpha", "0.8", "-o", str(out)]) == 0
    assert "0.2 x" in capsys.readouterr().out
    blended = load_model(out)
    key = "first_part.0.weight"
    expected = 0.2 * a.model.state_dict()[key] + 0.8 * b.model.state_dict()[key]
    torch.testing.assert_close(blended.model.state_dict()[key], expected)
    assert blended.metadata["blend"]["alpha"] == 0.8
    assert cli_main(["blend", str(path_a), str(path_b), "-o", str(out)]) == 1  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err


def test_strength_interpolates_a_gan_model_with_the_psnr_model_its_weights_name(tmp_path, capsys) -> None:
    a, b = _two_models()
    psnr = save_checkpoint(tmp_path / "psnr.safetensors", a)
    gan = save_checkpoint(tmp_path / "gan.safetensors", b, psnr_model="psnr.safetensors")
    key = "first_part.0.weight"
    weights = lambda strength: load_model(gan, strength=strength).model.state_dict()[key]  # noqa: E731
    assert torch.equal(weights(0.0), a.model.state_dict()[key]) and torch.equal(weights(1.0), b.model.state_dict()[key])
    torch.testing.assert_close(weights(0.25), 0.75 * a.model.state_dict()[key] + 0.25 * b.model.state_dict()[key])
    assert load_model(gan, strength=0.25).metadata["strength"] == 0.25
    with pytest.raises(ModelError, match="strength must be a number from 0 to 1, got 1.5"):
        load_model(gan, strength=1.5)
    with pytest.raises(ModelError, match="psnr has no PSNR model to interpolate with"):
        load_model(psnr, strength=0.5)
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(image)
    half = tmp_path / "half.png"
    assert cli_main(["upscale", str(image), "-m", str(gan), "--strength", "0.5", "-o", str(half), "-q"]) == 0
    assert np.asarray(Image.open(half)).shape == (24, 32, 3)
    assert cli_main(["upscale", str(image), "-m", str(psnr), "--strength", "0.5", "-o", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.strip().endswith("name one (psnr_model)")


def test_vidsr_train_runs_the_gan_stage_for_a_config_with_a_gan_table(setup, capsys) -> None:
    tmp_path, config, _ = setup
    path = tmp_path / "gan.toml"
    path.write_text(
        f'arch = "espcn"\nscale = 2\nhyperparams = {{ channels = 3, features = 8, mid_features = 8 }}\n'
        f'train_dirs = ["{tmp_path / "hr"}"]\ncache_dir = "{tmp_path / "cache"}"\ninit_from = "{config.init_from}"\n'
        'patch_size = 16\nbatch_size = 2\ndevice = "cpu"\nthreads = 1\nlog_every = 1\n'
        '[gan]\nd_features = 8\nperceptual_weight = 0.0\nadversarial = "standard"\n'
    )
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(path), "--out-dir", str(out), "--iterations", "2", "--no-progress"]) == 0
    assert "exported" in capsys.readouterr().out
    with (out / "gan_log.csv").open() as handle:
        assert float(next(csv.DictReader(handle))["adversarial"]) > 0
    plain = tmp_path / "plain.toml"
    plain.write_text('arch = "espcn"\n')
    assert cli_main(["train", "--config", str(plain), "--vgg-weights", "vgg.pth"]) == 1
    assert "--vgg-weights only apply to a config with a [gan] table" in capsys.readouterr().err


def test_a_distilled_student_may_start_from_scratch(setup) -> None:
    """With a teacher the target is its output, so no PSNR stage is needed first: init_from may be left out."""
    tmp_path, config, gan = setup
    gan = replace(gan, adversarial_weight=0.0, pixel_weight=1.0, teachers=[config.init_from])
    trainer = _run(replace(config, init_from=None), gan, tmp_path / "scratch", iterations=2)
    assert trainer.iteration == 2
    with pytest.raises(InputError, match="set init_from"):  # without a teacher the GAN stage still needs one
        GANTrainer(replace(config, init_from=None, out_dir=str(tmp_path / "none")), replace(gan, teachers=[]))
