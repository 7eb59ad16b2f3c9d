"""Standard datasets through torchvision: `data=mnist`, `data=cifar10`.

Nothing is downloaded unless the user asks (`download=true`); a missing dataset stops the run
before training with one sentence saying where the files go and how to fetch them. The download runs in
`prepare_data`, which Lightning calls on one process per node while the other DDP ranks wait. The official
training set is split into train / val with a fixed seed; the official test set is the test split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from gdm.data.base import SplitDataModule
from gdm.data.digits import split_indices
from gdm.errors import GdmError
from gdm.option_types import BatchSize, Flag, HeldOut, ImageSide, SplitSeed, Workers, checked

# name -> (torchvision class, channels, native size, what the files look like under root)
SETS = {
    "mnist": (datasets.MNIST, 1, 28, "MNIST/raw/train-images-idx3-ubyte etc."),
    "fashion_mnist": (datasets.FashionMNIST, 1, 28, "FashionMNIST/raw/train-images-idx3-ubyte etc."),
    "cifar10": (datasets.CIFAR10, 3, 32, "cifar-10-batches-py/data_batch_1 etc."),
}


class LabelledImages(Dataset):
    """A torchvision (image, label) dataset as gdm's {"image", "label"} items."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> dict:
        """The identity of these images for the real-feature cache: a hash of the dataset's pixel array."""
        data = self.dataset.data
        data = data.numpy() if hasattr(data, "numpy") else data
        return {"kind": type(self.dataset).__name__, "n": len(self),
                "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "transform": repr(self.transform)}

    def __getitem__(self, index: int) -> dict:
        image, label = self.dataset[index]
        return {"image": self.transform(image), "label": int(label)}


def open_dataset(name: str, root: Path, train: bool, download: bool) -> Dataset:
    cls, _, _, layout = SETS[name]
    try:
        return cls(str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found ... use download=True"
        raise GdmError(
            f"{name} is not in root={root} ({err}): run once with download=true on a machine with "
            f"network access, or copy the torchvision files there ({layout})."
        ) from None
    except OSError as err:  # URLError and friends while downloading
        raise GdmError(f"Could not download {name} into {root} ({err}): check the network, or copy the "
                       f"torchvision files there ({layout}) and keep download=false.") from None


class TorchvisionDataModule(SplitDataModule):
    num_classes = 10
    provides = frozenset({"image", "label"})

    @checked
    def __init__(self, name: Annotated[Literal["mnist", "fashion_mnist", "cifar10"], Field(
                     description="a torchvision dataset")],
                 root: str, image_size: ImageSide | None = None, download: Flag = False, flip: Flag = False,
                 val_fraction: HeldOut = 0.1, split_seed: SplitSeed = 0, batch_size: BatchSize = 64,
                 num_workers: Workers = 2, pin_memory: Flag = False, fid_features: str = "inception"):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        _, channels, native, _ = SETS[name]
        self.name, self.root = name, Path(root).expanduser()
        self.image_size = image_size or native
        self.image_shape = (channels, self.image_size, self.image_size)
        self.flip, self.val_fraction, self.split_seed = flip, val_fraction, split_seed
        self.download = download
        self.train_set = self.test_set = None
        if not download:  # open now: a missing dataset fails before the model is built
            self.open()

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                open_dataset(self.name, self.root, train=train, download=True)

    def open(self) -> None:
        if self.train_set is None:
            self.train_set = open_dataset(self.name, self.root, train=True, download=False)
            self.test_set = open_dataset(self.name, self.root, train=False, download=False)

    def transform(self, augment: bool) -> v2.Compose:
        steps: list = [v2.ToImage()]
        if self.image_size != SETS[self.name][2]:
            steps.append(v2.Resize(self.image_size, antialias=True))
        if augment and self.flip:
            steps.append(v2.RandomHorizontalFlip())
        channels = self.image_shape[0]
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize([0.5] * channels, [0.5] * channels)])

    def build_splits(self) -> dict[str, Dataset]:
        self.open()
        parts = split_indices(len(self.train_set), self.val_fraction, 0.0, self.split_seed)
        plain = LabelledImages(self.train_set, self.transform(False))
        augmented = LabelledImages(self.train_set, self.transform(True))
        return {
            "train": Subset(plain, parts["train"].tolist()),
            "train_augmented": Subset(augmented, parts["train"].tolist()),
            "val": Subset(plain, parts["val"].tolist()),
            "test": LabelledImages(self.test_set, self.transform(False)),
        }

    def class_counts(self, split: str = "train") -> torch.Tensor:
        dataset = self.split(split)
        targets = torch.as_tensor(self.test_set.targets if split == "test" else self.train_set.targets)
        if isinstance(dataset, Subset):
            targets = targets[dataset.indices]
        return torch.bincount(targets, minlength=self.num_classes)

    def train_dataloader(self):
        return self.dataloader("train_augmented", shuffle=True, drop_last=True)
