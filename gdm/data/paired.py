"""Paired two-domain data (pix2pix): every A image comes with its own B image, aligned pixel for pixel.

A batch holds `image_a` and `image_b` (and `label_a` / `label_b` when labelled). Unlike the unpaired
data, item i is always the pair i, and any random augmentation (crop, flip) is drawn once per pair and
applied to both images: the two are transformed as one tensor of stacked channels, so they cannot
come apart (`paired_transform`).

`direction` (AtoB | BtoA) says which image is the input; the data module only checks and keeps it (the
model reads it from the data config), and always serves both images.
Metrics read each domain on its own: `datamodule.split("B/test")` is the B images of the test pairs,
with `image` (and `label`) items, in pair order.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from gdm.data.base import SplitDataModule
from gdm.option_types import BatchSize, Flag, Workers, checked

DOMAINS = ("A", "B")
DIRECTIONS = ("AtoB", "BtoA")
Direction = Annotated[Literal["AtoB", "BtoA"], Field(description="which image of a pair is the input")]


def paired_transform(image_size: int, load_size: int, train: bool, flip: bool) -> v2.Compose:
    """For (2C, H, W) uint8 tensors, A's channels stacked on B's: the reference code's resize to
    load_size x load_size (bicubic), random crop to image_size and random flip when training, else a resize
    to image_size x image_size; one draw of crop and flip moves both images alike."""
    size = load_size if train else image_size
    steps: list = [v2.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if train:
        steps.append(v2.RandomCrop(image_size))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]  # the mean broadcasts
    return v2.Compose(steps)


class TensorPairDataset(Dataset):
    """In-memory aligned images in [-1, 1]: `images_a[i]` pairs with `images_b[i]`, optional labels."""

    def __init__(self, images_a: torch.Tensor, images_b: torch.Tensor, labels: torch.Tensor | None = None):
        if images_a.shape[0] != images_b.shape[0]:
            raise ValueError(f"{images_a.shape[0]} A images but {images_b.shape[0]} B images: pairs need both.")
        self.images_a, self.images_b, self.labels = images_a, images_b, labels

    def __len__(self) -> int:
        return self.images_a.shape[0]

    def fingerprint(self) -> dict:
        digest = hashlib.sha256()
        for images in (self.images_a, self.images_b):
            digest.update(images.detach().cpu().contiguous().numpy().tobytes())
        return {"kind": "in-memory image pairs", "n": len(self), "sha256": digest.hexdigest()}

    def __getitem__(self, index: int) -> dict:
        item = {"image_a": self.images_a[index], "image_b": self.images_b[index]}
        if self.labels is not None:
            item["label_a"] = item["label_b"] = self.labels[index]
        return item


class DomainView(Dataset):
    """One domain of a paired dataset, as `image` (and `label`) items in pair order."""

    def __init__(self, pairs: Dataset, domain: str):
        self.pairs, self.key = pairs, domain.lower()

    def __len__(self) -> int:
        return len(self.pairs)

    def fingerprint(self) -> dict | None:
        inner = getattr(self.pairs, "fingerprint", None)
        return None if inner is None else {**inner(), "domain": self.key.upper()}

    def __getitem__(self, index: int) -> dict:
        item = self.pairs[index]
        return {key[:-2]: value for key, value in item.items() if key.endswith(f"_{self.key}")}


class PairedDataModule(SplitDataModule):
    """Subclasses implement `build_pairs()`: paired datasets named "train", "val", "test", plus an optional
    "train_augmented" for training with random augmentation. This base adds each split's domain views
    ("A/test", "B/test", ...)."""

    # "aligned": image_a[i] and image_b[i] are the same scene (not a batch key: what the pairs are)
    provides = frozenset({"image_a", "image_b", "aligned"})

    @checked
    def __init__(self, direction: Direction = "AtoB", batch_size: BatchSize = 1, num_workers: Workers = 0,
                 pin_memory: Flag = False, fid_features: str = "inception"):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        self.direction = direction

    def build_pairs(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def build_splits(self) -> dict[str, Dataset]:
        pairs = self.build_pairs()
        views = {f"{d}/{split}": DomainView(pairs[split], d) for split in ("train", "val", "test") for d in DOMAINS}
        return {**pairs, **views}

    def train_dataloader(self):
        return self.dataloader("train_augmented" if "train_augmented" in self.split_names() else "train",
                               shuffle=True, drop_last=True)

    def split_names(self) -> set[str]:
        self.setup()
        return set(self.datasets)
