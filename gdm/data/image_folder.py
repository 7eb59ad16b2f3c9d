"""Any folder tree of images under `root`.

If every image sits in a first-level sub-folder and there are at least two of them, the
sub-folder names are class labels (torchvision's ImageFolder layout); otherwise the data is
unlabelled. Problems with the folder (missing, empty, an unreadable file) stop the run before
training with one sentence naming the path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from gdm.data.base import SplitDataModule
from gdm.data.digits import check_held_out, split_indices
from gdm.data.image_files import WHITE, find_images, open_image, verify_images
from gdm.errors import GdmError
from gdm.option_types import (
    Background,
    BatchSize,
    Channels,
    Flag,
    HeldOut,
    ImageSide,
    LoadSide,
    SplitSeed,
    Workers,
    checked,
)


def image_transform(image_size: int, load_size: int | None, channels: int, train: bool,
                    random_crop: bool, flip: bool) -> v2.Compose:
    """Resize the short side to `load_size`, crop `image_size` (random when training), optional flip."""
    steps: list = [v2.ToImage(), v2.Resize(load_size or image_size, antialias=True)]
    steps.append(v2.RandomCrop(image_size) if train and random_crop else v2.CenterCrop(image_size))
    if train and flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)


class ImageFileDataset(Dataset):
    """Image files decoded by `gdm.data.image_files.open_image` (upright, 8-bit, alpha over `background`)."""

    def __init__(self, files: list[Path], labels: list[int] | None, transform, channels: int,
                 background: tuple[int, int, int] = WHITE):
        self.files, self.labels, self.transform = files, labels, transform
        self.channels, self.background = channels, tuple(background)
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> dict:
        """The identity of these images for the real-feature cache, without reading them: every file's
        path, size and modification time, and the transform."""
        digest = hashlib.sha256()
        for path in self.files:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return {"kind": "image files", "n": len(self), "files_sha256": digest.hexdigest(), "mode": self.mode,
                "background": list(self.background), "transform": repr(self.transform)}

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.transform(open_image(self.files[index], self.channels, self.background))}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def class_labels(root: Path, files: list[Path]) -> tuple[list[int] | None, list[str]]:
    """Labels from first-level sub-folder names, or None when the tree is not class-structured."""
    tops = [f.relative_to(root).parts for f in files]
    if any(len(parts) < 2 for parts in tops):
        return None, []
    classes = sorted({parts[0] for parts in tops})
    if len(classes) < 2:
        return None, []
    index = {c: i for i, c in enumerate(classes)}
    return [index[parts[0]] for parts in tops], classes


class ImageFolderDataModule(SplitDataModule):
    @checked
    def __init__(self, root: str, image_size: ImageSide = 64, load_size: LoadSide | None = None,
                 channels: Channels = 3, random_crop: Flag = False, flip: Flag = True, val_fraction: HeldOut = 0.05,
                 test_fraction: HeldOut = 0.05, split_seed: SplitSeed = 0, verify: Flag = True,
                 batch_size: BatchSize = 64, num_workers: Workers = 2, pin_memory: Flag = False,
                 fid_features: str = "inception", background: Background = WHITE):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        self.root = Path(root).expanduser()
        self.background = tuple(background)
        check_held_out(val_fraction, test_fraction)
        if load_size is not None and load_size < image_size:
            raise GdmError(f"load_size={load_size} is smaller than image_size={image_size}: the crop would "
                           "pad the images with black; set load_size >= image_size, or null.")
        self.image_shape = (channels, image_size, image_size)
        self.image_size, self.load_size, self.channels = image_size, load_size, channels
        self.random_crop, self.flip = random_crop, flip
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        # Scan now, so a bad folder fails before the model is even built.
        self.files = find_images(self.root)
        if verify:
            verify_images(self.files, root=self.root)
        self.labels, self.classes = class_labels(self.root, self.files)
        self.num_classes = len(self.classes) if self.labels is not None else None
        self.provides = frozenset({"image", "label"} if self.labels is not None else {"image"})

    def build_splits(self) -> dict[str, ImageFileDataset]:
        parts = split_indices(len(self.files), self.val_fraction, self.test_fraction, self.split_seed)
        datasets = {}
        for name, idx in parts.items():
            files = [self.files[i] for i in idx.tolist()]
            labels = [self.labels[i] for i in idx.tolist()] if self.labels is not None else None
            for augment in (False, True) if name == "train" else (False,):
                transform = image_transform(self.image_size, self.load_size, self.channels, augment,
                                            self.random_crop, self.flip)
                key = f"{name}_augmented" if augment else name
                datasets[key] = ImageFileDataset(files, labels, transform, self.channels, self.background)
        return datasets

    def train_dataloader(self):
        return self.dataloader("train_augmented", shuffle=True, drop_last=True)
