"""Evaluation protocol: MATLAB bicubic, Y-PSNR/SSIM, the published bicubic baseline, `vidsr eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidsr.cli import main
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint
from vidsr.models.zoo import load_model
from vidsr.quality.evaluate import bicubic_predictor, evaluate_dataset, model_predictor
from vidsr.quality.metrics import psnr, rgb_to_y, ssim
from vidsr.quality.resize import imresize, imresize_np, resize_matrix

EVAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"


@pytest.fixture(autouse=True)
def one_thread():
    # float64 matmuls on image-sized matrices oversubscribe the shared CPU with the default thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resize_rows_sum_to_one_and_mirror_at_borders() -> None:
    matrix = resize_matrix(10, 5, 0.5)
    assert torch.allclose(matrix.sum(1), torch.ones(5, dtype=torch.float64))
    # antialiased x1/2 kernel spans 8 input pixels: the first output pixel reflects 3 pixels at the border
    assert (matrix[0] != 0).sum() == 5
    assert torch.equal(resize_matrix(6, 6, 1.0), torch.eye(6, dtype=torch.float64))


def test_resize_step_edge_by_hand() -> None:
    # Halving a step edge: output pixel 2 sits at input 3.5; the antialiased kernel h(d) = cubic(d / 2) / 2 gives
    # the 255-valued inputs at distances 1.5, 2.5, 3.5 the weights 0.11328125, -0.03515625, -0.01171875.
    row = np.array([[0, 0, 0, 0, 255, 255, 255, 255]], dtype=np.float64)
    expected = [-2.98828125, 16.93359375, 238.06640625, 257.98828125]
    assert imresize_np(row, size=(1, 4))[0] == pytest.approx(expected)
    assert imresize_np(row.astype(np.uint8), size=(1, 4)).tolist() == [[0, 17, 238, 255]]


def test_quantize_rounds_halves_up() -> None:
    x = torch.full((1, 4, 4), 10.5 / 255, dtype=torch.float64)
    assert torch.allclose(imresize(x, 1.0, quantize=True) * 255, torch.full((1, 4, 4), 11.0, dtype=torch.float64))


def test_upscale_size_and_uint8_dtype() -> None:
    img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    out = imresize_np(img, 3)
    assert out.shape == (27, 21, 3) and out.dtype == np.uint8


def test_metrics_known_values() -> None:
    a = np.zeros((20, 20))
    b = np.full((20, 20), 255 / 10)  # MSE = 255^2 / 100 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, b, border=2) == pytest.approx(20.0)
    texture = np.random.default_rng(0).uniform(0, 255, (32, 32))
    assert ssim(texture, texture) == pytest.approx(1.0)
    # flat images: only the luminance term, (2 * 100 * 110 + C1) / (100^2 + 110^2 + C1), C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    assert ssim(np.full((16, 16), 100.0), np.full((16, 16), 110.0)) == pytest.approx((22000 + c1) / (22100 + c1))
    white = np.full((1, 1, 3), 255, dtype=np.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)


@pytest.mark.skipif(not (EVAL_DATA / "Set5").is_dir(), reason="Set5 not present (see ../shared/data/SOURCES.md)")
@pytest.mark.parametrize(("scale", "published"), [(2, 33.66), (3, 30.39), (4, 28.42)])
def test_bicubic_baseline_reproduces_published_set5(scale: int, published: float) -> None:
    result = evaluate_dataset(bicubic_predictor(scale), EVAL_DATA / "Set5", scale)
    assert abs(result.psnr - published) <= 0.02
    assert len(result.per_image) == 5


@pytest.mark.skipif(not (EVAL_DATA / "Set14").is_dir(), reason="Set14 not present (see ../shared/data/SOURCES.md)")
def test_bicubic_baseline_reproduces_published_set14_with_its_greyscale_image() -> None:
    """bridge.png is greyscale: measured as its own luma, Set14 x2 is 30.24 (30.32 through RGB -> Y)."""
    result = evaluate_dataset(bicubic_predictor(2), EVAL_DATA / "Set14", 2)
    assert abs(result.psnr - 30.24) <= 0.02


def test_greyscale_images_are_their_own_luma_for_y_and_rgb_models(tmp_path: Path) -> None:
    """The grey plane is the Y model's input as it is, and three equal channels for an RGB model."""
    grey = smooth_image(1)[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    lr = imresize_np(grey, 1 / 2)
    bicubic = evaluate_dataset(bicubic_predictor(2), tmp_path, 2).psnr
    assert bicubic == pytest.approx(psnr(grey.astype(float), imresize_np(lr, 2).astype(float), 2))
    for channels in (1, 3):
        descriptor = create_model("espcn", scale=2, channels=channels, features=8, mid_features=4)
        with torch.no_grad():
            x = torch.from_numpy(np.repeat(lr[None, None], channels, axis=1)).float() / 255
            out = descriptor.model(x)[0].clamp(0, 1).mul(255).add(0.5).floor().numpy().mean(axis=0)
        expected = psnr(grey.astype(float), out, 2)
        assert evaluate_dataset(model_predictor(descriptor), tmp_path, 2).psnr == pytest.approx(expected)


def smooth_image(seed: int, size: tuple[int, int] = (36, 30)) -> np.ndarray:
    """A natural-ish image: upscaled noise, so SR figures are in a sensible range."""
    small = np.random.default_rng(seed).integers(0, 256, (size[0] // 6, size[1] // 6, 3), dtype=np.uint8)
    return imresize_np(small, 6)


def test_model_predictor_runs_y_and_rgb_models(tmp_path: Path) -> None:
    Image.fromarray(smooth_image(0)).save(tmp_path / "a.png")
    for channels in (1, 3):
        model = create_model("espcn", scale=3, channels=channels, features=8, mid_features=4)
        result = evaluate_dataset(model_predictor(model), tmp_path, 3)
        assert 0 < result.psnr < 40 and -1 <= result.ssim <= 1


def test_eval_command_writes_json_and_records_psnr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "Tiny"
    data.mkdir()
    for seed in range(2):
        Image.fromarray(smooth_image(seed)).save(data / f"{seed}.png")
    weights = save_checkpoint(tmp_path / "m.safetensors", create_model("espcn", scale=2, features=8, mid_features=4))
    out = tmp_path / "r.json"
    assert main(["eval", str(weights), "--bicubic", "--scale", "2", "--dataset", str(data), "--json", str(out),
                 "--record"]) == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["dataset"], r["scale"]) for r in rows] == [("bicubic", "Tiny", 2), (str(weights), "Tiny", 2)]
    assert rows[0]["psnr"] > rows[1]["psnr"]  # random weights are worse than bicubic
    assert "bicubic" in capsys.readouterr().out
    assert load_model(weights).metadata["psnr"] == {"Tiny": rows[1]["psnr"]}
