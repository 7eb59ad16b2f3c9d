"""An embedded paired dataset for pix2pix, no download: each scikit-learn digit in grey (A) and the same
digit rendered in colour on a photo patch (B), as `digits_colour` renders its B domain (MNIST-M style).

Why this pair: B -> A is fully determined by the input (strip the texture, keep exactly this digit's
strokes), and A -> B is determined where it matters, the strokes, while the background texture is not in
the input at all: the division of labour pix2pix was made for (L1 pins the layout, the GAN term supplies
plausible texture). Only paired training can match the ground truth pixel for pixel, which L1 / PSNR /
SSIM measure; the shipped `digits_colour` classifier reads both domains, so either direction's
translations can be checked for keeping the digit. Unlike `digits_colour` (two disjoint halves), every
digit is in both domains here. Splits: a fixed seeded 80 / 10 / 10 % partition of the 1,797 pairs.
"""

from __future__ import annotations

from gdm.data.digits import check_held_out, load_digit_images, split_indices
from gdm.data.digits_colour import PatchBrightness, PatchCrop, colour_digits
from gdm.data.paired import Direction, PairedDataModule, TensorPairDataset
from gdm.option_types import BatchSize, Flag, HeldOut, ImageSide, SplitSeed, Workers, checked


class DigitsPairedDataModule(PairedDataModule):
    num_classes = 10
    provides = frozenset({"image_a", "image_b", "aligned", "label_a", "label_b"})

    @checked
    def __init__(self, image_size: ImageSide = 32, patch_crop: PatchCrop = 64,
                 patch_brightness: PatchBrightness = 0.4, val_fraction: HeldOut = 0.1, test_fraction: HeldOut = 0.1,
                 split_seed: SplitSeed = 0, direction: Direction = "AtoB", batch_size: BatchSize = 1,
                 num_workers: Workers = 0, pin_memory: Flag = False, fid_features: str = "digits_colour"):
        super().__init__(direction, batch_size, num_workers, pin_memory, fid_features)
        check_held_out(val_fraction, test_fraction)
        self.image_size, self.patch_crop, self.patch_brightness = image_size, patch_crop, patch_brightness
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.image_shape = (3, image_size, image_size)

    def build_pairs(self) -> dict[str, TensorPairDataset]:
        digits, labels = load_digit_images(self.image_size)
        grey = digits.expand(-1, 3, -1, -1).contiguous()
        colour = colour_digits(digits, self.split_seed + 1, self.patch_crop, self.patch_brightness)
        parts = split_indices(len(digits), self.val_fraction, self.test_fraction, self.split_seed)
        return {name: TensorPairDataset(grey[idx], colour[idx], labels[idx]) for name, idx in parts.items()}
