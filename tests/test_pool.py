"""The degraded-pair pool: reproducible pairs (workers, cache), the sliding window, and GAN training from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vidsr.compute.upscaler import cpu_runs_bf16
from vidsr.errors import InputError
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint
from vidsr.models.zoo import load_model
from vidsr.train.config import TrainConfig
from vidsr.train.data import PairCache
from vidsr.train.degradations import DegradationConfig
from vidsr.train.gan import GANSettings, GANTrainer
from vidsr.train.pool import PairPool, PoolSampler, ShardMaker
from vidsr.train.teachers import teacher_output

CROP, SIZE = 32, 8  # 8 pairs in shards of 2
# Real-ESRGAN's chain with its cheapest settings: the pool's behaviour, not the chain's, is under test here.
CHEAP = {"first": {"blur": {"size_range": [7, 7]}}, "second_prob": 0.0, "final_sinc": {"prob": 0.0}}
HYPERPARAMS = {"channels": 3, "features": 8, "mid_features": 8}


@pytest.fixture(scope="module")
def hr_dir(textured_dir) -> Path:
    return textured_dir(2, 64)


@pytest.fixture(scope="module")
def cache(hr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PairCache:
    return PairCache([hr_dir], scale=2, channels=3, cache_dir=tmp_path_factory.mktemp("cache"))


def make_pool(cache: PairCache, folder: Path, workers: int = 0) -> PairPool:
    return PairPool(cache, DegradationConfig.from_dict(CHEAP), SIZE, CROP, seed=3, cache_dir=folder, workers=workers)


def window(pool: PairPool) -> list[tuple[np.ndarray, ...]]:
    pool.move_to(0)
    try:
        return [pool.pair(index) for index in range(SIZE)]
    finally:
        pool.close()


def test_pairs_are_the_same_with_workers_and_from_the_cache(cache: PairCache, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    in_process = window(make_pool(cache, tmp_path / "a"))
    by_workers = window(make_pool(cache, tmp_path / "b", workers=1))
    monkeypatch.setattr(ShardMaker, "write", lambda *args: pytest.fail("the cached pool was made again"))
    from_cache = window(make_pool(cache, tmp_path / "a"))
    for pairs in (by_workers, from_cache):
        for pair, same in zip(in_process, pairs, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(pair, same, strict=True))
    lr, gt, plain = in_process[0]
    assert lr.shape == (3, CROP // 2, CROP // 2) and gt.shape == (3, CROP, CROP)
    assert plain is gt  # no unsharp-masked target: the plain GT is not stored twice
    assert not np.array_equal(in_process[0][1], in_process[1][1])  # each pair its own crop
    assert len(list((tmp_path / "a").glob("pool_*/shard_*.npz"))) == SIZE // 2 + 1  # the window and the next shard


def test_window_slides_prunes_shards_behind_it_and_resumes_exactly(cache: PairCache, tmp_path: Path) -> None:
    pool = make_pool(cache, tmp_path)
    sampler = PoolSampler(pool, patch_size=8, batch_size=3, refresh=1.0, rng=np.random.default_rng(1))
    for _ in range(5):  # windows start at pairs 0..4: shards 0 and 1 fall behind
        lr, gt, real = sampler.batch()
    assert lr.shape == (3, 3, 8, 8) and gt.shape == real.shape == (3, 3, 16, 16)
    shards = sorted(int(path.stem.split("_")[1]) for path in pool.folder.glob("shard_*.npz"))
    assert shards == [2, 3, 4, 5, 6]
    state = sampler.rng.bit_generator.state
    expected = sampler.batch()
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    resumed = PoolSampler(make_pool(cache, tmp_path), 8, 3, 1.0, rng, batches=5).batch()
    assert all(torch.equal(a, b) for a, b in zip(expected, resumed, strict=True))
    with pytest.raises(InputError, match="pool_crop"):
        PoolSampler(pool, patch_size=24, batch_size=1, refresh=1.0, rng=rng)


def test_gan_trains_from_the_pool_and_resumes_exactly(hr_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    pretrained = save_checkpoint(tmp_path / "psnr.safetensors", create_model("espcn", scale=2, **HYPERPARAMS))
    config = TrainConfig(arch="espcn", scale=2, hyperparams=HYPERPARAMS, train_dirs=[str(hr_dir)],
                         cache_dir=str(tmp_path / "cache"), patch_size=8, batch_size=2, iterations=4, lr=1e-3,
                         ema_decay=0, device="cpu", threads=1, log_every=2, checkpoint_minutes=1e9,
                         init_from=str(pretrained), numerics="bf16")  # the bf16 path on every CPU
    gan = GANSettings(discriminator="unet", d_features=8, adversarial="standard", perceptual_weight=0.0,
                      degradation=CHEAP, pool_size=4, pool_crop=CROP, pool_refresh=0.5)

    def trainer(out: str, **changes: object) -> GANTrainer:
        return GANTrainer(replace(config, out_dir=str(tmp_path / out), **changes), gan)

    straight = trainer("straight")
    straight.run(progress=False)
    assert isinstance(straight.sampler, PoolSampler) and straight.sampler.batches == 4
    trainer("split").run(progress=False, until=2)
    resumed = trainer("split")
    resumed.run(progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key



def test_a_teacher_pool_stores_the_teachers_output_made_once(cache: PairCache, tmp_path: Path) -> None:
    """Distillation from a pool: GT is the teacher's output on the pair's LR, made with the shard; an x4 teacher
    gives an x2 pool its output resampled with the antialiased bicubic, and other teacher weights another pool."""
    torch.manual_seed(0)
    teacher = save_checkpoint(tmp_path / "teacher_x4.safetensors", create_model("espcn", scale=4, **HYPERPARAMS))
    config = DegradationConfig.from_dict(CHEAP)
    pool = PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "pool", teacher=str(teacher))
    plain = PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "pool")
    pairs, plain_pairs = window(pool), window(plain)
    for (lr, gt, _), (plain_lr, plain_gt, _) in zip(pairs, plain_pairs, strict=True):
        assert np.array_equal(lr, plain_lr) and not np.array_equal(gt, plain_gt)  # same input, the teacher's target
        x = torch.from_numpy(lr).float()[None] / 255
        expected = teacher_output(load_model(teacher), x, 2).clamp(0, 1)[0]
        assert gt.shape == (3, CROP, CROP)
        assert np.abs(gt.astype(np.float64) - expected.numpy() * 255).max() <= 0.51  # uint8 rounding only
    torch.manual_seed(1)
    save_checkpoint(teacher, create_model("espcn", scale=4, **HYPERPARAMS))
    retrained = PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "pool", teacher=str(teacher))
    assert retrained.folder not in (pool.folder, plain.folder)


def test_the_teachers_precision_is_part_of_the_pool_key(cache: PairCache, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Teachers run under bf16 autocast where the CPU has bf16 in hardware: a pool made in one precision is never
    read as the other's, and the two targets differ only by bf16's rounding."""
    from vidsr.train import teachers

    torch.manual_seed(0)
    teacher = save_checkpoint(tmp_path / "teacher.safetensors", create_model("espcn", scale=2, **HYPERPARAMS))
    config = DegradationConfig.from_dict(CHEAP)
    folders, outputs = [], []
    x = torch.rand(2, 3, 16, 16)
    for bf16 in (False, True):
        monkeypatch.setattr(teachers, "teacher_in_bf16", lambda bf16=bf16: bf16)
        folders.append(PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "pool",
                                teacher=str(teacher)).folder)
        if cpu_runs_bf16():  # an AVX2-only CPU has no bf16 convolution to compare
            outputs.append(teacher_output(load_model(teacher), x, 2))
    assert folders[0] != folders[1]
    if outputs:
        assert not torch.equal(*outputs) and (outputs[0] - outputs[1]).abs().max() < 0.02


def test_clean_pairs_may_keep_the_hr_target_in_a_teacher_pool(cache: PairCache, tmp_path: Path) -> None:
    """teacher_on_clean=False: a pair whose LR is the plain bicubic downscale trains towards the HR image (clean
    input keeps its fidelity), every other pair towards the teacher."""
    torch.manual_seed(0)
    teacher = save_checkpoint(tmp_path / "teacher.safetensors", create_model("espcn", scale=2, **HYPERPARAMS))
    config = DegradationConfig.from_dict({**CHEAP, "clean_prob": 0.5})
    made = {on_clean: window(PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "pool",
                                      teacher=str(teacher), teacher_on_clean=on_clean)) for on_clean in (True, False)}
    plain = window(PairPool(cache, config, SIZE, CROP, seed=3, cache_dir=tmp_path / "plain"))
    kept = [np.array_equal(mixed[1], hr[1]) for mixed, hr in zip(made[False], plain, strict=True)]
    taught = [np.array_equal(mixed[1], full[1]) for mixed, full in zip(made[False], made[True], strict=True)]
    assert 0 < sum(kept) < SIZE and all(k != t for k, t in zip(kept, taught, strict=True))
