"""An embedded unpaired pair for CycleGAN, no download: grey digits (A) <-> MNIST-M-style colour digits (B).

Both domains come from scikit-learn's bundled digits, split into two disjoint halves (seeded), so no
B image is a rendering of any A image: the pairs are truly unpaired.
- A: the digit in white on black, as an RGB image (grey, three equal channels).
- B: the digit blended with a colour patch of the two photos scikit-learn bundles, as MNIST-M
  (Ganin et al. 2016) does with BSDS500 patches: b = |patch - digit|, so strokes show the patch's
  colour inverted and the background the patch itself. The patches are darkened first
  (x `patch_brightness`, 0.4 by default), so strokes are always lighter than their background: with
  MNIST-M's full-range patches a third of the 32 px digits are dark strokes on bright patches, which
  CycleGAN turned into grey blobs instead of digits (experiments/cyclegan.md).
Each domain has its own train and test images (`test_fraction` of its half) and keeps its digit
labels (`label_a`, `label_b`), which measure whether a translation preserves the digit.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from sklearn.datasets import load_sample_images

from gdm.data.digits import TensorImageDataset, load_digit_images
from gdm.data.unpaired import UnpairedDataModule
from gdm.images import to_uint8
from gdm.option_types import BatchSize, Flag, HeldOut, ImageSide, SplitSeed, Workers, checked

# The photos are 427 x 640.
PatchCrop = Annotated[int, Strict(), Field(ge=1, le=427, description="pixels of the photo crop behind a digit")]
PatchBrightness = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False, description=(
    "the photo patch's weight in |brightness * patch - digit|"))]


def photo_patches(n: int, size: int, seed: int, crop: int) -> torch.Tensor:
    """`n` random square `crop`-pixel crops of the bundled photos (427 x 640), resized to `size`, as
    (n, 3, size, size) floats in [0, 1]. Larger crops carry more texture into a patch."""
    photos = [torch.tensor(np.asarray(img)).permute(2, 0, 1).float() / 255 for img in load_sample_images().images]
    g = torch.Generator().manual_seed(seed)
    patches = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (), generator=g))]
        top = int(torch.randint(photo.shape[1] - crop + 1, (), generator=g))
        left = int(torch.randint(photo.shape[2] - crop + 1, (), generator=g))
        patches.append(photo[:, top:top + crop, left:left + crop])
    return F.interpolate(torch.stack(patches), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def colour_digits(digits: torch.Tensor, seed: int, crop: int, brightness: float) -> torch.Tensor:
    """MNIST-M style: |brightness * patch - digit| per channel, for (N, 1, S, S) digits in [-1, 1]; result
    in [-1, 1] on the 8-bit grid."""
    patches = brightness * photo_patches(len(digits), digits.shape[-1], seed, crop)
    blended = (patches - (digits + 1) / 2).abs()
    return to_uint8(blended * 2 - 1).float() / 127.5 - 1


class DigitsColourDataModule(UnpairedDataModule):
    num_classes = 10
    provides = frozenset({"image_a", "image_b", "label_a", "label_b"})

    @checked
    def __init__(self, image_size: ImageSide = 32, patch_crop: PatchCrop = 64,
                 patch_brightness: PatchBrightness = 0.4, test_fraction: HeldOut = 0.2, split_seed: SplitSeed = 0,
                 batch_size: BatchSize = 1, num_workers: Workers = 0, pin_memory: Flag = False,
                 fid_features: str = "digits_colour"):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        self.image_size, self.patch_crop, self.patch_brightness = image_size, patch_crop, patch_brightness
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self.image_shape = (3, image_size, image_size)

    def build_domains(self) -> dict[str, TensorImageDataset]:
        digits, labels = load_digit_images(self.image_size)
        order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(self.split_seed))
        halves = {"A": order[: len(order) // 2], "B": order[len(order) // 2:]}
        self.source_indices = halves  # which of the 1,797 digits each domain holds (disjoint)
        images = {"A": digits[halves["A"]].expand(-1, 3, -1, -1).contiguous(),
                  "B": colour_digits(digits[halves["B"]], self.split_seed + 1, self.patch_crop,
                                            self.patch_brightness)}
        domains = {}
        for d, idx in halves.items():
            n_test = round(len(idx) * self.test_fraction)
            for split, part in (("test", slice(0, n_test)), ("train", slice(n_test, None))):
                domains[f"{d}/{split}"] = TensorImageDataset(images[d][part], labels[idx][part])
        return domains
