"""Training: patches, schedule, exact resume, logs and the exported weights."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidsr.errors import InputError, ModelError
from vidsr.models.zoo import load_model
from vidsr.quality.resize import imresize_np
from vidsr.train.config import TrainConfig, load_config
from vidsr.train.data import PairCache, PatchSampler
from vidsr.train.trainer import Trainer, lr_factor


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        Image.fromarray(imresize_np(small, 6)).save(folder / f"{i}.png")  # 48x60, smooth
    return folder


def tiny_config(image_dir: Path, out_dir: Path, **overrides) -> TrainConfig:
    values = dict(arch="espcn", scale=2, hyperparams={"channels": 1, "features": 8, "mid_features": 4},
                  train_dirs=[str(image_dir)], val_dir=str(image_dir), out_dir=str(out_dir), patch_size=8,
                  batch_size=4, iterations=12, log_every=3, val_every=6, lr=1e-3, threads=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_patches_are_aligned_lr_hr_pairs(image_dir: Path, tmp_path: Path) -> None:
    cache = PairCache([image_dir], scale=2, channels=1, cache_dir=tmp_path)
    assert any(tmp_path.glob("pairs_x2_c1_*.npz"))
    lr, hr = PatchSampler(cache, patch_size=8, batch_size=5, seed=0).batch()
    assert lr.shape == (5, 1, 8, 8) and hr.shape == (5, 1, 16, 16)
    # the LR patch is the MATLAB-bicubic downscale of the HR patch, up to border effects and 8-bit rounding
    down = torch.stack([torch.from_numpy(imresize_np(h[0].numpy().astype(np.float64), 0.5)) for h in hr])
    assert torch.allclose(down[:, 2:-2, 2:-2].float(), lr[:, 0, 2:-2, 2:-2], atol=3 / 255)
    reloaded = PairCache([image_dir], scale=2, channels=1, cache_dir=tmp_path)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(cache.pairs, reloaded.pairs, strict=True))


def test_lr_schedules() -> None:
    cosine = TrainConfig(iterations=100, lr=1e-3, lr_min=1e-5, warmup=10)
    assert lr_factor(cosine, 0) == pytest.approx(0.1)
    assert lr_factor(cosine, 10) == pytest.approx(1.0)
    assert lr_factor(cosine, 100) == pytest.approx(0.01)
    step = TrainConfig(schedule="step", step_size=10, gamma=0.5)
    assert [lr_factor(step, i) for i in (9, 10, 25)] == [1.0, 0.5, 0.25]


def read_log(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_resume_is_exact_and_logs_and_exports(image_dir: Path, tmp_path: Path) -> None:
    straight = Trainer(tiny_config(image_dir, tmp_path / "straight"))
    straight.run(progress=False)

    Trainer(tiny_config(image_dir, tmp_path / "resumed")).run(progress=False, until=7)
    resumed = Trainer(tiny_config(image_dir, tmp_path / "resumed"))
    assert resumed.iteration == 7
    exported = resumed.run(progress=False)

    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    rows = read_log(tmp_path / "resumed")
    assert [(int(r["iteration"]), bool(r["val_psnr"])) for r in rows] == [
        (3, False), (6, True), (9, False), (12, True)]
    same_fields = ("iteration", "loss", "lr", "val_psnr")
    assert [[r[f] for f in same_fields] for r in rows] == [[r[f] for f in same_fields]
                                                            for r in read_log(tmp_path / "straight")]
    assert (tmp_path / "resumed" / "plot.png").stat().st_size > 0
    model = load_model(exported)
    assert model.metadata["recipe"]["iterations"] == 12
    assert (model.scale, model.color) == (2, "y")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_state_that_would_run_code(image_dir: Path, tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "code_ran"
    run_dir.mkdir()
    torch.save({"iteration": 3, "payload": _Exploit(marker)}, run_dir / "state.pt")
    with pytest.raises(ModelError, match="refused"):
        Trainer(tiny_config(image_dir, run_dir))
    assert not marker.exists()


def test_bf16_numerics_keep_fp32_master_weights_and_resume_exactly(image_dir: Path, tmp_path: Path) -> None:
    config = dict(numerics="bf16", val_dir=None, iterations=6)
    straight = Trainer(tiny_config(image_dir, tmp_path / "straight", **config))
    straight.run(progress=False)
    Trainer(tiny_config(image_dir, tmp_path / "resumed", **config)).run(progress=False, until=3)
    resumed = Trainer(tiny_config(image_dir, tmp_path / "resumed", **config))
    resumed.run(progress=False)
    weights = straight.model.state_dict()
    assert all(value.dtype == torch.float32 for value in weights.values())
    assert weights["first_part.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(weights.values(), resumed.model.state_dict().values(), strict=True))
    fp32 = Trainer(tiny_config(image_dir, tmp_path / "fp32", **{**config, "numerics": "fp32"}))
    assert not fp32.numerics.bf16 and fp32.model.state_dict()["first_part.0.weight"].is_contiguous()
    with pytest.raises(InputError, match="numerics"):
        Trainer(tiny_config(image_dir, tmp_path / "bad", numerics="fp8"))


def test_training_reduces_loss(image_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(image_dir, tmp_path, iterations=60, val_dir=None, lr=3e-3, ema_decay=0))
    losses = [trainer.step() for _ in range(60)]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_config_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('arch = "fsrcnn"\nscale = 3\nhyperparams = { channels = 1 }\n')
    config = load_config(path, scale=4, lr=None)
    assert (config.arch, config.scale, config.hyperparams) == ("fsrcnn", 4, {"channels": 1})
    path.write_text("learning_rate = 1\n")
    with pytest.raises(InputError, match="learning_rate"):
        load_config(path)


def test_config_extends_other_files_in_order_and_merges_tables(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "base.toml").write_text(
        'extends = "inner.toml"\nlr = 0.1\n[hyperparams]\nchannels = 1\nfeatures = 8\n')
    (tmp_path / "parts" / "inner.toml").write_text('arch = "fsrcnn"\nbatch_size = 4\n')
    (tmp_path / "second.toml").write_text("lr = 0.2\nwarmup = 5\n")
    path = tmp_path / "c.toml"  # paths are relative to the file that names them, not the working folder
    path.write_text('extends = ["parts/base.toml", "second.toml"]\nwarmup = 7\n[hyperparams]\nfeatures = 16\n')
    config = load_config(path)
    assert (config.arch, config.batch_size, config.lr, config.warmup) == ("fsrcnn", 4, 0.2, 7)
    assert config.hyperparams == {"channels": 1, "features": 16}


@pytest.mark.parametrize(("text", "message"), [
    ('extends = "c.toml"\n', "extends itself"),
    ('extends = "missing.toml"\n', "missing.toml"),
    ("extends = 3\n", "extends must be a file name"),
])
def test_config_extends_refuses_loops_and_bad_names(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(path)


class FakeClock:
    """time.monotonic that advances a fixed step per call: a trainer that runs at a known, steady speed."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_time_budget_fits_iterations_and_anneals(image_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from vidsr.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BUDGET_WARMUP", 2)
    monkeypatch.setattr(trainer_module, "BUDGET_PROBE", 4)
    monkeypatch.setattr(trainer_module.time, "monotonic", FakeClock(0.1))  # two reads per iteration: 5 it/s
    config = dict(iterations=10_000, minutes=0.1, val_dir=None, lr_min=1e-6, checkpoint_minutes=100)
    trainer = Trainer(tiny_config(image_dir, tmp_path / "a", **config))
    trainer.run(progress=False, until=10)
    planned = trainer.config.iterations
    assert 25 <= planned <= 35  # 6 s at 5 it/s, give or take the clock reads outside the loop
    resumed = Trainer(tiny_config(image_dir, tmp_path / "a", **config))
    assert resumed.config.iterations == planned  # the fitted schedule survives a pause
    resumed.run(progress=False)
    assert resumed.iteration == planned
    assert resumed.scheduler.get_last_lr()[0] == pytest.approx(1e-6, rel=1e-3)  # annealed at the budget's end


def test_a_run_past_its_budget_stops_with_a_validated_export(image_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from vidsr.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BUDGET_WARMUP", 2)
    monkeypatch.setattr(trainer_module, "BUDGET_PROBE", 4)
    monkeypatch.setattr(trainer_module, "BUDGET_OVERRUN", 0.5)  # as if the device slowed down after fitting
    monkeypatch.setattr(trainer_module.time, "monotonic", FakeClock(0.1))
    trainer = Trainer(tiny_config(image_dir, tmp_path, iterations=10_000, minutes=0.1, val_every=1000))
    trainer.run(progress=False)
    assert 12 <= trainer.iteration <= 18  # stopped near half of the ~30 planned iterations
    last = read_log(tmp_path)[-1]
    assert int(last["iteration"]) == trainer.iteration and last["val_psnr"]
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.safetensors").is_file()


def test_fine_tuned_weights_carry_their_starting_recipe(image_dir: Path, tmp_path: Path) -> None:
    from vidsr.models.zoo import model_card

    first = Trainer(tiny_config(image_dir, tmp_path / "first", val_dir=None)).run(progress=False)
    second = Trainer(tiny_config(image_dir, tmp_path / "second", val_dir=None, iterations=3,
                                 init_from=str(first))).run(progress=False)
    recipe = load_model(second).metadata["recipe"]
    assert recipe["iterations"] == 3 and recipe["init_recipe"]["iterations"] == 12
    card = model_card(second)
    assert "3 iterations" in card and "initialised from last.safetensors; before that:\n  - Trained" in card
    assert "12 iterations" in card
