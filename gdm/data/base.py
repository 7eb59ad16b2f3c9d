"""What every gdm data module shares: named splits, loaders, and the facts a model is sized from."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gdm.option_types import BatchSize, Flag, Workers, checked

SPLITS = ("train", "val", "test")


class SplitDataModule(L.LightningDataModule):
    """A data module with train / val / test datasets built by `build_splits()`.

    Subclasses set `image_shape` (C, H, W), `num_classes` (None when unlabelled) and `provides`
    (the keys of a batch, and "aligned" when image_a[i] and image_b[i] are a pair) in `__init__`, so they are
    known before any data is loaded.
    """

    image_shape: tuple[int, int, int]
    num_classes: int | None = None
    provides: frozenset[str] = frozenset({"image"})

    @checked
    def __init__(self, batch_size: BatchSize = 64, num_workers: Workers = 0, pin_memory: Flag = False,
                 fid_features: str = "inception"):
        super().__init__()
        # The FID feature network that suits this data; `metrics.features` defaults to it.
        self.fid_features = fid_features
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, Dataset] = {}

    def build_splits(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = self.build_splits()

    def split(self, name: str) -> Dataset:
        """The dataset of one split ('train', 'val' or 'test') without random augmentation, as metrics
        need it; loads the data on first use. Training batches may come from an augmented variant."""
        self.setup()
        return self.datasets[name]

    def class_counts(self, split: str = "train") -> torch.Tensor | None:
        """Images per class in a split (None for unlabelled data): the label frequencies that
        class-balanced sampling follows."""
        if self.num_classes is None:
            return None
        dataset = self.split(split)
        labels = getattr(dataset, "labels", None)
        if labels is None:
            labels = [dataset[i]["label"] for i in range(len(dataset))]
        return torch.bincount(torch.as_tensor(labels), minlength=self.num_classes)

    def dataloader(self, split: str, shuffle: bool = False, drop_last: bool = False,
                   batch_size: int | None = None) -> DataLoader:
        # Evaluation loaders get their own generator: iterating a DataLoader draws a seed, and evaluating
        # must not change the training run's RNG stream (so neither metrics nor their frequency do).
        return DataLoader(
            self.split(split),
            generator=None if shuffle else torch.Generator(),
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")
