"""A paired dataset on disk, in either of two layouts:

- side by side, as the pix2pix reference sets (`data=facades`, `maps`, `edges2shoes`, ...): `root/train/`,
  `root/val/`, `root/test/`, each image A | B, the left half A and the right half B;
- two aligned folders per split: `root/trainA/` + `root/trainB/` (and `valA/ valB/`, `testA/ testB/`),
  the pairs matched by relative file name.

Splits: `test` is test/ where there is one, else val/ (maps, edges2shoes and edges2handbags have no test
set); `val` is val/, else test/. Transforms as the reference code: training pairs resized to
`load_size` x `load_size` (bicubic), randomly cropped to `image_size` and flipped, the same crop and flip
for A and B (`gdm.data.paired.paired_transform`); evaluation pairs resized to `image_size`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from gdm.data.download import PAIRED_DATASETS, download_command
from gdm.data.image_files import WHITE, find_images, image_paths, open_image, verify_images
from gdm.data.paired import Direction, PairedDataModule, paired_transform
from gdm.errors import GdmError
from gdm.option_types import Background, BatchSize, Channels, Flag, ImageSide, LoadSide, Workers, checked

log = logging.getLogger(__name__)


def split_side_by_side(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, 2W) A | B -> A (C, H, W) and B (C, H, W), as the reference's aligned dataset (left half A)."""
    half = image.shape[-1] // 2
    return image[..., :half], image[..., half:2 * half]


class PairedFileDataset(Dataset):
    """Pairs from files: `files_b` None = each file holds A | B side by side."""

    def __init__(self, files_a: list[Path], files_b: list[Path] | None, transform, channels: int,
                 background: tuple[int, int, int] = WHITE):
        self.files_a, self.files_b, self.transform = files_a, files_b, transform
        self.channels, self.background = channels, tuple(background)
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.files_a)

    def fingerprint(self) -> dict:
        digest = hashlib.sha256()
        for path in [*self.files_a, *(self.files_b or [])]:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return {"kind": "image file pairs", "n": len(self), "files_sha256": digest.hexdigest(), "mode": self.mode,
                "background": list(self.background), "side_by_side": self.files_b is None,
                "transform": repr(self.transform)}

    def read(self, path: Path) -> torch.Tensor:
        return pil_to_tensor(open_image(path, self.channels, self.background))

    def __getitem__(self, index: int) -> dict:
        if self.files_b is None:
            image_a, image_b = split_side_by_side(self.read(self.files_a[index]))
        else:
            image_a, image_b = self.read(self.files_a[index]), self.read(self.files_b[index])
            if image_a.shape != image_b.shape:  # one common size, so they can travel as one tensor
                image_b = torch.nn.functional.interpolate(image_b[None].float(), size=image_a.shape[-2:],
                                                          mode="bicubic", antialias=True)[0].round().clamp(0, 255)
                image_b = image_b.to(torch.uint8)
        # One tensor of A's and B's channels: one crop and one flip, by construction.
        both = self.transform(torch.cat([image_a, image_b]))
        image_a, image_b = both.split(image_a.shape[0])
        return {"image_a": image_a, "image_b": image_b}


def has_images(folder: Path) -> bool:
    return bool(image_paths(folder))


def warn_unless_side_by_side(folder: Path, files: list[Path]) -> None:
    """Log a warning when a side-by-side folder's first image is not twice as wide as tall (single images, not
    A | B pairs, would be split in halves as pairs without a word: the wrong folder, most likely). Reads the header
    of one file; the reference sets (facades, maps, edges2shoes, ...) are all exactly 2:1."""
    try:
        with Image.open(files[0]) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - unreadable: verification names it, in one sentence
        return
    if abs(width - 2 * height) > 1:
        log.warning(f"{files[0]} is {width}x{height} px, not twice as wide as tall: the images in {folder} are read "
                    "as side-by-side pairs (left half A, right half B); if they are single images, point root "
                    "at a folder of pairs.")


def find_pairs(root: Path, split: str) -> tuple[list[Path], list[Path] | None] | None:
    """The files of one split (A files, B files or None for side by side), or None if the split is absent."""
    if has_images(root / split):
        files = find_images(root / split, key=f"root/{split}")
        warn_unless_side_by_side(root / split, files)
        return files, None
    folder_a, folder_b = root / f"{split}A", root / f"{split}B"
    if not (has_images(folder_a) or has_images(folder_b)):
        return None
    files_a = find_images(folder_a, key=f"root/{split}A")
    files_b = find_images(folder_b, key=f"root/{split}B")
    names_a = [p.relative_to(folder_a) for p in files_a]
    names_b = {p.relative_to(folder_b) for p in files_b}
    unmatched = [str(n) for n in names_a if n not in names_b] + sorted(
        str(n) for n in names_b - set(names_a))
    if unmatched:
        raise GdmError(f"root={root}: {split}A/ and {split}B/ must hold the same file names (pairs match by "
                       f"name), but {len(unmatched)} do not, e.g. {unmatched[0]}: add or remove those files.")
    return files_a, [folder_b / n for n in names_a]


class PairedFolderDataModule(PairedDataModule):
    @checked
    def __init__(self, root: str, name: str | None = None, image_size: ImageSide = 256, load_size: LoadSide = 286,
                 channels: Channels = 3, flip: Flag = True, direction: Direction = "AtoB", verify: Flag = True,
                 batch_size: BatchSize = 1, num_workers: Workers = 4, pin_memory: Flag = False,
                 fid_features: str = "inception", background: Background = WHITE):
        super().__init__(direction, batch_size, num_workers, pin_memory, fid_features)
        self.background = tuple(background)
        if load_size < image_size:
            raise GdmError(f"load_size={load_size} is smaller than image_size={image_size}: the random "
                           "crop needs load_size >= image_size.")
        self.root, self.name = Path(root).expanduser(), name
        self.image_shape = (channels, image_size, image_size)
        self.image_size, self.load_size, self.channels, self.flip = image_size, load_size, channels, flip
        # Scan now, so a missing or mismatched folder fails before the model is built.
        found = {split: find_pairs(self.root, split) for split in ("train", "val", "test")}
        if found["train"] is None or (found["val"] is None and found["test"] is None):
            if name in PAIRED_DATASETS:
                how = f"get it with `{download_command(name, self.root.parent)}`"
                if self.root.name != name:
                    how += f" and set root={self.root.parent / name}"
            else:
                how = ("point root at a folder with train/ and test/ (or val/) of side-by-side A | B images, "
                       "or trainA/ trainB/ testA/ testB/ of pairs with matching file names")
            raise GdmError(f"root={self.root} has no training pairs and test pairs: {how}.")
        found["val"] = found["val"] or found["test"]
        found["test"] = found["test"] or found["val"]
        self.files = found
        if verify:
            for files_a, files_b in found.values():
                verify_images([*files_a, *(files_b or [])], root=self.root)

    def build_pairs(self) -> dict[str, PairedFileDataset]:
        pairs = {}
        for key, split, train in (("train", "train", False), ("train_augmented", "train", True),
                                  ("val", "val", False), ("test", "test", False)):
            transform = paired_transform(self.image_size, self.load_size, train, self.flip)
            pairs[key] = PairedFileDataset(*self.files[split], transform, self.channels, self.background)
        return pairs
