"""The one conversion from model output to pixels.

Images leave every model in [-1, 1]. Anything saved, logged or fed to FID goes through
`to_uint8` first, with the same rounding as `torchvision.utils.save_image`, so a metric computed
in training equals the metric of the PNG files on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images (N, C, H, W) -> uint8 in [0, 255], rounded like a PNG writer."""
    return ((images.detach().float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], for losses and likelihoods defined on unit-range pixels."""
    return (images + 1) / 2


def grid_uint8(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """A (C, H, W) uint8 grid of [-1, 1] images, padded with black as torchvision does."""
    return make_grid(to_uint8(images).cpu(), nrow=nrow, padding=padding, pad_value=0)


def save_png(image_uint8: torch.Tensor, path: str | Path) -> Path:
    """Write one (C, H, W) uint8 image (1 or 3 channels) losslessly as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image_uint8.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def load_png(path: str | Path, channels: int) -> torch.Tensor:
    """Read a PNG back as a (C, H, W) uint8 tensor: the inverse of `save_png`."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        array = np.asarray(img)
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
