"""Unpaired two-domain data (CycleGAN): domains A and B, each with its own train and test images.

A batch holds `image_a` and `image_b` (and `label_a` / `label_b` when the domains are labelled).
As in the CycleGAN reference code, a training epoch has max(|A|, |B|) items: item i pairs A[i mod |A|]
with a B image drawn at random, so no pairing survives from one epoch to the next. Evaluation pairs
A[i mod |A|] with B[i mod |B|], deterministically.

Metrics read each domain on its own: `datamodule.split("A/test")` is domain A's test set, with
`image` (and `label`) items like any other split.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gdm.data.base import SplitDataModule

DOMAINS = ("A", "B")


class UnalignedDataset(Dataset):
    def __init__(self, a: Dataset, b: Dataset, random_b: bool):
        self.a, self.b, self.random_b = a, b, random_b

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, index: int) -> dict:
        # torch's RNG: seeded by seed_everything, per worker too.
        j = int(torch.randint(len(self.b), ())) if self.random_b else index % len(self.b)
        item_a, item_b = self.a[index % len(self.a)], self.b[j]
        return {f"{key}_{domain}": value for domain, item in (("a", item_a), ("b", item_b))
                for key, value in item.items()}


class UnpairedDataModule(SplitDataModule):
    """Subclasses implement `build_domains()`: datasets named "A/train", "A/test", "B/train", "B/test",
    plus optional "A/train_augmented" / "B/train_augmented" for training with random augmentation.
    Validation and test both use the test images (the standard sets have no validation split)."""

    provides = frozenset({"image_a", "image_b"})

    def build_domains(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def build_splits(self) -> dict[str, Dataset]:
        domains = self.build_domains()
        # Training batches come from the augmented variant where there is one; metrics read the plain one.
        train = [domains.get(f"{d}/train_augmented", domains[f"{d}/train"]) for d in DOMAINS]
        test = [domains[f"{d}/test"] for d in DOMAINS]
        return {**domains, "train": UnalignedDataset(*train, random_b=True),
                "val": UnalignedDataset(*test, random_b=False), "test": UnalignedDataset(*test, random_b=False)}
