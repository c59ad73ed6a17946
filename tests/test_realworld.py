"""NIQE, the real-world protocol and the flicker measure (`vidsr eval --realworld --flicker`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidsr.cli import main as cli_main
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint
from vidsr.models.zoo import load_model
from vidsr.quality.evaluate import bicubic_predictor, luma, read_eval_image
from vidsr.quality.metrics import overshoot
from vidsr.quality.niqe import niqe
from vidsr.quality.realworld import degrade_lr, evaluate_flicker, evaluate_realworld, still_and_panning
from vidsr.quality.resize import imresize_np
from vidsr.tools.sample import pattern_frame
from vidsr.train.degradations import covariance, filter2d, gaussian_kernel

EVAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
SET14 = EVAL_DATA / "Set14"
RANKED = ("baboon", "barbara", "comic", "face", "pepper")  # five Set14 images (face and pepper: the softest)


@pytest.fixture(scope="module")
def hr_dir(textured_dir) -> Path:
    """Two 192x192 textured images: 2x2 NIQE patches each at x2."""
    return textured_dir(2, 192)


def _blurred(img: np.ndarray) -> np.ndarray:
    return filter2d(torch.from_numpy(img)[None], gaussian_kernel(7, covariance(1.0, 1.0, 0.0)))[0].numpy()


def _noisy(img: np.ndarray) -> np.ndarray:
    return np.clip(img + np.random.default_rng(0).normal(0, 15, img.shape), 0, 255)


def _jpeg(img: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buffer, "JPEG", quality=15)
    return luma(np.asarray(Image.open(buffer).convert("L")))


@pytest.mark.skipif(not SET14.is_dir(), reason="Set14 not present (see ../shared/data/SOURCES.md)")
@pytest.mark.parametrize("distort", [_blurred, _noisy, _jpeg], ids=["blur", "noise", "jpeg15"])
def test_niqe_ranks_clean_images_above_distorted_ones(distort) -> None:
    for name in RANKED:
        clean = np.rint(luma(read_eval_image(SET14 / f"{name}.png")))
        assert niqe(clean) < niqe(distort(clean)), name


def test_niqe_scores_rgb_as_its_luma(hr_dir: Path) -> None:
    rgb = read_eval_image(hr_dir / "0.png")
    assert niqe(rgb) == pytest.approx(niqe(luma(rgb)))
    assert niqe(rgb) > 0


def test_real_world_input_is_reproducible_and_degraded(hr_dir: Path) -> None:
    lr = imresize_np(read_eval_image(hr_dir / "0.png"), 0.5)
    first, again, other = degrade_lr(lr, 0), degrade_lr(lr, 0), degrade_lr(lr, 1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.shape == lr.shape and first.dtype == np.uint8
    difference = first.astype(float) - lr
    assert abs(difference.mean()) < 2 and 2 < difference.std() < 30  # noise and blur, no tone change
    grey = degrade_lr(lr[..., 0], 0)
    assert grey.shape == lr.shape[:2]


def test_realworld_figures_follow_the_output(hr_dir: Path) -> None:
    bicubic = bicubic_predictor(2)
    plain = evaluate_realworld(bicubic, hr_dir, 2)
    brighter = evaluate_realworld(lambda lr: bicubic(lr) + 10, hr_dir, 2)
    flatter = evaluate_realworld(lambda lr: (bicubic(lr) - 128) / 2 + 128, hr_dir, 2)
    assert abs(plain.dy) < 1 and 0.5 < plain.std_ratio < 1  # bicubic smooths: less contrast, same tone
    # Each call degrades the LR afresh; torch's blur can round a pixel differently when another test has changed
    # the thread count, so the calls agree to a few thousandths, not exactly.
    assert brighter.dy == pytest.approx(plain.dy + 10, abs=1e-2) and brighter.psnr < plain.psnr
    assert flatter.std_ratio == pytest.approx(plain.std_ratio / 2, rel=1e-3) and flatter.ssim < plain.ssim
    assert brighter.niqe == pytest.approx(plain.niqe, rel=1e-3) and plain.niqe > 0  # MSCN statistics ignore the mean


def test_overshoot_measures_haloes_not_sharpness() -> None:
    """A step edge: the truth, a copy two pixels off and a blurred copy stay in range; a bright rim along the
    edge overshoots by what it adds."""
    truth = np.full((40, 40), 60.0)
    truth[:, 20:] = 200.0
    blurred = truth.copy()
    blurred[:, 17:23] = np.linspace(60, 200, 8)[1:-1]
    for inside in (truth, np.roll(truth, 2, axis=1), blurred):
        assert overshoot(truth, inside) == 0
    rim = truth.copy()
    rim[:, 20:22] = 230  # a 30-level bright rim along the bright side of the edge
    band = 2 * 4 + 2  # columns within 4 of the two where the step shows (19, 20)
    assert overshoot(truth, rim) == pytest.approx(30 * 2 / band)
    # brighter by 10: beyond every local max on the bright side (columns 20-24), on the dark side only where the
    # 9x9 window holds no bright pixel (15)
    assert overshoot(truth, truth + 10) == pytest.approx(10 * 6 / band)
    assert np.isnan(overshoot(np.full((20, 20), 90.0), np.full((20, 20), 200.0)))  # no edge: nothing to measure


def test_realworld_reports_the_haloes_of_a_sharpened_output(tmp_path: Path) -> None:
    """On a picture with clean edges (the textured images have few), unsharp masking raises the figure."""
    hr_dir = tmp_path / "edges"
    hr_dir.mkdir()
    Image.fromarray((pattern_frame(384, 192, 0) * 255).round().astype(np.uint8)).save(hr_dir / "0.png")
    bicubic = bicubic_predictor(2)

    def sharpened(lr: np.ndarray) -> np.ndarray:  # unsharp masking: the classic source of haloes
        up = bicubic(lr)
        return up + 1.5 * (up - _blurred(up))

    plain, sharp = evaluate_realworld(bicubic, hr_dir, 2), evaluate_realworld(sharpened, hr_dir, 2)
    assert sharp.overshoot > 2 * plain.overshoot > 0


def test_flicker_counts_shimmer_on_static_pixels(hr_dir: Path) -> None:
    truth = still_and_panning(read_eval_image(hr_dir / "0.png"), 2, 3)
    assert np.array_equal(truth[0][:96], truth[2][:96]) and not np.array_equal(truth[0][96:], truth[1][96:])
    bicubic = bicubic_predictor(2)
    steady = evaluate_flicker(bicubic, hr_dir, 2, frames=3)
    rng = np.random.default_rng(0)
    shimmering = evaluate_flicker(lambda lr: bicubic(lr) + rng.normal(0, 5, (lr.shape[0] * 2, lr.shape[1] * 2)),
                                  hr_dir, 2, frames=3)
    assert 0 < steady.static_flicker < 5  # per-frame noise and coding pass through a little
    # independent noise of sigma 5 adds about 5 * sqrt(2) * sqrt(2 / pi) = 5.6 levels of change
    assert shimmering.static_flicker - steady.static_flicker == pytest.approx(5.6, abs=1.0)
    assert shimmering.flicker > steady.flicker


def test_eval_command_reports_and_records_realworld_and_flicker(hr_dir: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.safetensors",
                              create_model("espcn", scale=2, channels=3, features=8, mid_features=4))
    out = tmp_path / "results.json"
    assert cli_main(["eval", str(weights), "--dataset", str(hr_dir), "--realworld", "--flicker", "--record",
                     "--json", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "realworld" in printed and "static_flicker" in printed
    rows = json.loads(out.read_text())
    assert {row.get("measure") for row in rows} == {None, "realworld", "flicker"}
    metadata = load_model(weights).metadata
    realworld = metadata["realworld"][hr_dir.name]
    assert set(realworld) == {"niqe", "psnr", "ssim", "dy", "std_ratio", "overshoot"} and realworld["niqe"] > 0
    assert set(metadata["flicker"][hr_dir.name]) == {"flicker", "static_flicker"}
