"""Pixel conversion, PNG round trips and grids."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gdm.images import grid_uint8, load_png, save_png, to_uint8, to_unit


def test_to_uint8_endpoints_and_midpoint():
    x = torch.tensor([-1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    # (x + 1) * 127.5 + 0.5, truncated: -1 -> 0.5 -> 0; 1 -> 255.5 -> 255; 0 -> 128.0 -> 128
    assert out.flatten().tolist() == [0, 255, 128]


def test_to_uint8_rounds_half_up_like_save_image():
    levels = torch.arange(256, dtype=torch.float64)
    # Exactly between two levels rounds up; just below rounds down.
    x_mid = ((levels[:-1] + 0.5) / 127.5 - 1).float().view(1, 1, 1, -1)
    x_exact = (levels / 127.5 - 1).float().view(1, 1, 1, -1)
    assert to_uint8(x_exact).flatten().tolist() == list(range(256))
    got = to_uint8(x_mid).flatten().long()
    assert ((got == levels[:-1].long()) | (got == levels[:-1].long() + 1)).all()
    # Same rule as torchvision.utils.save_image: x01 * 255 + 0.5, clamp, truncate.
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = ((x + 1) / 2).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    assert torch.equal(to_uint8(x), expected)


def test_to_uint8_clamps():
    x = torch.tensor([-5.0, -1.01, 1.01, 7.0, float("inf"), float("-inf")]).view(1, 1, 1, -1)
    assert to_uint8(x).flatten().tolist() == [0, 0, 255, 255, 255, 0]


def test_to_uint8_detaches_and_accepts_half():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    assert to_uint8(x).tolist() == [[[[128, 128], [128, 128]]]]
    assert to_uint8(torch.ones(1, 1, 1, 1, dtype=torch.bfloat16)).item() == 255


def test_to_unit():
    torch.testing.assert_close(to_unit(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact(tmp_path, channels):
    image = torch.randint(0, 256, (channels, 13, 17), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    image[:, 0, 0] = 0
    image[:, 0, 1] = 255
    path = save_png(image, tmp_path / "sub" / "dir" / "x.png")  # creates parent folders
    assert path.is_file()
    with Image.open(path) as img:
        assert img.mode == ("L" if channels == 1 else "RGB")
        assert img.size == (17, 13)
    back = load_png(path, channels)
    assert back.dtype == torch.uint8
    assert back.shape == image.shape
    assert torch.equal(back, image)


def test_png_round_trip_of_model_output(tmp_path):
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2.2 - 1.1
    u8 = to_uint8(x.unsqueeze(0))[0]
    assert torch.equal(load_png(save_png(u8, tmp_path / "a.png"), 3), u8)


def test_load_png_converts_channels(tmp_path):
    gray = torch.full((1, 4, 4), 77, dtype=torch.uint8)
    path = save_png(gray, tmp_path / "g.png")
    rgb = load_png(path, 3)
    assert rgb.shape == (3, 4, 4)
    assert (rgb == 77).all()


def test_save_png_accepts_non_contiguous(tmp_path):
    image = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(3, 4, 2).permute(2, 0, 1)[:1]  # (1, 3, 4) view
    assert torch.equal(load_png(save_png(image, tmp_path / "v.png"), 1), image)


def test_grid_uint8_shape_and_padding():
    images = torch.ones(64, 3, 8, 8)  # all white
    grid = grid_uint8(images, nrow=8)
    assert grid.dtype == torch.uint8
    # 8 x 8 tiles of 8 pixels with 2 pixels of padding around each: 8 * (8 + 2) + 2 = 82
    assert grid.shape == (3, 82, 82)
    assert (grid[:, :2, :] == 0).all() and (grid[:, :, :2] == 0).all()  # black padding
    assert (grid[:, 2:10, 2:10] == 255).all()
    assert int((grid == 255).sum()) == 64 * 3 * 8 * 8


def test_grid_uint8_single_channel_and_uneven_rows():
    images = -torch.ones(10, 1, 4, 4)
    grid = grid_uint8(images, nrow=4, padding=1)
    # make_grid repeats one channel to three; 3 rows of 4 columns: (4 + 1) * 3 + 1 = 16 by (4 + 1) * 4 + 1 = 21
    assert grid.shape == (3, 16, 21)
    assert (grid == 0).all()
