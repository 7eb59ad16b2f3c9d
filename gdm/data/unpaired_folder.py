"""An unpaired dataset on disk in the CycleGAN layout: `root/trainA/ trainB/ testA/ testB/`.

`data=monet` (monet2photo), `data=horse2zebra`, ... are this module with `name` set; `data=unpaired
root=DIR` takes any folder with the four sub-folders. The transforms are the reference code's
defaults: training images are resized to `load_size` x `load_size` (bicubic, aspect ratio not kept),
randomly cropped to `image_size` and flipped; test images are resized to `image_size` x `image_size`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import InterpolationMode, v2

from gdm.data.download import DATASETS, download_command, missing_folders
from gdm.data.image_files import WHITE, find_images, verify_images
from gdm.data.image_folder import ImageFileDataset
from gdm.data.unpaired import DOMAINS, UnpairedDataModule
from gdm.errors import GdmError
from gdm.option_types import Background, BatchSize, Channels, Flag, ImageSide, LoadSide, Workers, checked

FOLDERS = tuple(f"{split}{d}" for split in ("train", "test") for d in DOMAINS)  # trainA trainB testA testB


def unpaired_transform(image_size: int, load_size: int, channels: int, train: bool, flip: bool) -> v2.Compose:
    size = load_size if train else image_size
    steps: list = [v2.ToImage(), v2.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if train:
        steps.append(v2.RandomCrop(image_size))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)


def check_layout(root: Path, name: str | None) -> None:
    missing = missing_folders(root)  # absent, or without an image
    if not missing:
        return
    if name in DATASETS:
        how = f"get it with `{download_command(name, root.parent, kind='cyclegan')}`"
        if root.name != name:  # the download unpacks into <data-dir>/<name>
            how += f" and set root={root.parent / name}"
    else:
        how = "point root at a folder with trainA/, trainB/, testA/ and testB/ sub-folders of images"
    raise GdmError(f"root={root} has no images in {', '.join(m + '/' for m in missing)}: {how}.")


class UnpairedFolderDataModule(UnpairedDataModule):
    @checked
    def __init__(self, root: str, name: str | None = None, image_size: ImageSide = 256, load_size: LoadSide = 286,
                 channels: Channels = 3, flip: Flag = True, verify: Flag = True, batch_size: BatchSize = 1,
                 num_workers: Workers = 4, pin_memory: Flag = False, fid_features: str = "inception",
                 background: Background = WHITE):
        super().__init__(batch_size, num_workers, pin_memory, fid_features)
        self.background = tuple(background)
        if load_size < image_size:
            raise GdmError(f"load_size={load_size} is smaller than image_size={image_size}: the random "
                           "crop needs load_size >= image_size.")
        self.root, self.name = Path(root).expanduser(), name
        self.image_shape = (channels, image_size, image_size)
        self.image_size, self.load_size, self.channels, self.flip = image_size, load_size, channels, flip
        check_layout(self.root, name)  # fail before the model is built
        self.files = {f: find_images(self.root / f, key=f"root/{f}") for f in FOLDERS}
        if verify:
            for folder, files in self.files.items():
                verify_images(files, root=self.root / folder)

    def build_domains(self) -> dict[str, ImageFileDataset]:
        domains = {}
        for d in DOMAINS:
            for key, folder, train in ((f"{d}/train", f"train{d}", False), (f"{d}/train_augmented", f"train{d}", True),
                                       (f"{d}/test", f"test{d}", False)):
                transform = unpaired_transform(self.image_size, self.load_size, self.channels, train, self.flip)
                domains[key] = ImageFileDataset(self.files[folder], None, transform, self.channels, self.background)
        return domains
