"""Colour conversion: known code values, round trips for every layout, chroma siting, levels."""

from __future__ import annotations

import pytest
import torch

from vidsr.color import planes_to_rgb, resample_plane, rgb_to_planes
from vidsr.media.frames import plane_layout
from vidsr.media.info import ColorInfo

BT709, BT601, BT2020 = ColorInfo(matrix=1), ColorInfo(matrix=6), ColorInfo(matrix=9)


def smooth_rgb(height: int = 37, width: int = 53) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([0.1 + 0.8 * x, 0.2 + 0.6 * y, 0.5 + 0.3 * torch.sin(3 * x + 2 * y)])[None]


def flat(value: tuple[float, float, float], pix_fmt: str, color: ColorInfo) -> list[int]:
    rgb = torch.tensor(value).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    return [int(p[0, 0, 0]) for p in rgb_to_planes(rgb, plane_layout(pix_fmt), color)]


def test_reference_code_values():
    # Limited-range BT.709 red and BT.601 red, as in the standards' tables (Y, Cb, Cr).
    assert flat((1, 0, 0), "yuv444p", BT709) == [63, 102, 240]
    assert flat((1, 0, 0), "yuv444p", BT601) == [81, 90, 240]
    assert flat((1, 1, 1), "yuv420p", BT709) == [235, 128, 128]
    assert flat((0, 0, 0), "yuv420p10le", BT2020) == [64, 512, 512]
    assert flat((1, 1, 1), "yuv420p", ColorInfo(matrix=1, full_range=True)) == [255, 128, 128]


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le", "yuv422p", "yuv444p12le", "gbrp", "gbrp16le"])
@pytest.mark.parametrize("color", [BT709, BT601, ColorInfo(matrix=1, full_range=True)])
def test_round_trip_is_within_quantisation(pix_fmt, color):
    rgb = smooth_rgb()
    layout = plane_layout(pix_fmt)
    planes = rgb_to_planes(rgb, layout, color)
    back = planes_to_rgb(planes, layout, color)
    # Two quantisation steps, plus the detail that chroma subsampling removes from a smooth image.
    subsampled = layout.log2_chroma_w or layout.log2_chroma_h
    tolerance = 2 / (219 << (layout.bit_depth - 8)) + (0.012 if subsampled else 0.0)
    assert (back - rgb).abs().max() < tolerance
    again = rgb_to_planes(back, layout, color)
    # Re-encoding the decoded picture moves no code by more than one 8-bit step.
    drift = max((a.int() - b.int()).abs().max().item() for a, b in zip(planes, again, strict=True))
    assert drift <= 1 << (layout.bit_depth - 8)


def test_gray_planes_give_neutral_rgb():
    y = torch.full((1, 5, 6), 126, dtype=torch.uint8)
    rgb = planes_to_rgb([y], plane_layout("gray"), BT709)
    assert torch.allclose(rgb, torch.full_like(rgb, (126 - 16) / 219))


def test_chroma_upsampling_respects_left_siting():
    """4:2:0 chroma is co-sited with even luma columns: a chroma impulse lands on column 2k, not 2k+0.5."""
    chroma = torch.zeros(1, 4, 8)
    chroma[..., 3] = 1.0
    up = resample_plane(chroma, 8, 16, (1, 1), (0, 0), 1)
    row = up[0, 3]
    assert row.argmax().item() == 6 and row[5].item() == pytest.approx(row[7].item(), abs=1e-6)


def test_top_left_siting_is_honoured():
    """BT.2020-style 'top-left' chroma (location 3) is co-sited vertically too: row 2k, not 2k+0.5."""
    top_left = ColorInfo(matrix=9, chroma_location=3)
    assert top_left.chroma_siting == (False, False) and BT709.chroma_siting == (False, True)
    chroma = torch.zeros(1, 8, 4)
    chroma[..., 3, :] = 1.0
    column = resample_plane(chroma, 16, 8, (1, 1), (0, 0), 1, top_left.chroma_siting)[0, :, 3]
    assert column.argmax().item() == 6 and column[5].item() == pytest.approx(column[7].item(), abs=1e-6)


def test_downsampling_antialiases():
    """Alternating columns (luma Nyquist) average out in 4:2:0 chroma instead of aliasing."""
    stripes = torch.zeros(1, 8, 16)
    stripes[..., ::2] = 1.0
    down = resample_plane(stripes, 4, 8, (0, 0), (1, 1), 1)
    assert down[0, :, 1:-1].sub(0.5).abs().max() < 0.15
