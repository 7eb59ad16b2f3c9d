"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): no download.

The 8x8 images (values 0..16) are resized to `image_size` with bilinear interpolation and then
quantized to 8-bit levels, as if they were stored as PNG files, so the real images are exactly
the kind of images a model is asked to produce.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from gdm.data.base import SplitDataModule
from gdm.errors import GdmError
from gdm.images import to_uint8
from gdm.option_types import BatchSize, Flag, HeldOut, ImageSide, SplitSeed, Workers, checked


class TensorImageDataset(Dataset):
    """In-memory images in [-1, 1] with optional integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def fingerprint(self) -> dict:
        """The identity of these images for the real-feature cache: a hash of their bytes."""
        data = self.images.detach().cpu().contiguous().numpy().tobytes()
        return {"kind": "in-memory images", "n": len(self), "sha256": hashlib.sha256(data).hexdigest()}

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index]}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def load_digit_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, S, S) float images in [-1, 1] on the 8-bit grid, and their labels."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = to_uint8(images * 2 - 1).float() / 127.5 - 1
    return images, torch.tensor(digits.target, dtype=torch.long)


def check_held_out(val_fraction: float, test_fraction: float) -> None:
    """GdmError naming both when the held-out fractions (each in [0, 1) by its type) leave nothing to train on."""
    if val_fraction + test_fraction >= 1:
        raise GdmError(f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training "
                       "images: their sum must be under 1.")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """A fixed, seeded random partition of range(n) into train / val / test; fractions in [0, 1) with a sum
    under 1 (`check_held_out`), as the data modules' signatures require."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


class DigitsDataModule(SplitDataModule):
    num_classes = 10
    provides = frozenset({"image", "label"})

    @checked
    def __init__(self, image_size: ImageSide = 32, val_fraction: HeldOut = 0.1, test_fraction: HeldOut = 0.1,
                 split_seed: SplitSeed = 0, batch_size: BatchSize = 64, num_workers: Workers = 0,
                 pin_memory: Flag = False, fid_features: str = "digits"):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        check_held_out(val_fraction, test_fraction)
        self.image_size = image_size
        self.image_shape = (1, image_size, image_size)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def build_splits(self) -> dict[str, TensorImageDataset]:
        images, labels = load_digit_images(self.image_size)
        parts = split_indices(len(images), self.val_fraction, self.test_fraction, self.split_seed)
        return {name: TensorImageDataset(images[idx], labels[idx]) for name, idx in parts.items()}
