"""Digits and image-folder data modules: splits, shapes, value grid, labels, loaders and folder errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gdm.data.digits import DigitsDataModule, load_digit_images, split_indices
from gdm.data.image_folder import ImageFolderDataModule
from gdm.errors import GdmError
from gdm.images import to_uint8


@pytest.fixture(scope="module")
def digits32() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    return dm


# ---- digits -------------------------------------------------------------------------------


def test_digits_split_sizes(digits32):
    sizes = {name: len(digits32.split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 1437, "val": 180, "test": 180}


def test_split_indices_partition():
    parts = split_indices(1797, 0.1, 0.1, seed=0)
    all_idx = torch.cat(list(parts.values()))
    assert sorted(all_idx.tolist()) == list(range(1797))
    assert torch.equal(parts["val"], split_indices(1797, 0.1, 0.1, seed=0)["val"])
    assert not torch.equal(parts["val"], split_indices(1797, 0.1, 0.1, seed=1)["val"])


def test_digits_splits_disjoint_and_deterministic(digits32):
    # A second instance gives the very same splits.
    other = DigitsDataModule(batch_size=64)
    for name in ("train", "val", "test"):
        assert torch.equal(other.split(name).images, digits32.split(name).images)
        assert torch.equal(other.split(name).labels, digits32.split(name).labels)
    # The splits are disjoint index sets covering all 1,797 digits, and hold those indices' images.
    parts = split_indices(1797, 0.1, 0.1, seed=0)
    assert not set(parts["train"].tolist()) & set(parts["val"].tolist())
    assert not set(parts["train"].tolist()) & set(parts["test"].tolist())
    assert not set(parts["val"].tolist()) & set(parts["test"].tolist())
    images, labels = load_digit_images(32)
    for name in ("train", "val", "test"):
        assert torch.equal(digits32.split(name).images, images[parts[name]])
        assert torch.equal(digits32.split(name).labels, labels[parts[name]])


def test_digits_split_seed_changes_split():
    a = DigitsDataModule(image_size=8, split_seed=0).split("val").images
    b = DigitsDataModule(image_size=8, split_seed=1).split("val").images
    assert a.shape == b.shape
    assert not torch.equal(a, b)


@pytest.mark.parametrize("image_size", [16, 32])
def test_digits_image_shape_and_values(image_size):
    dm = DigitsDataModule(image_size=image_size)
    assert dm.image_shape == (1, image_size, image_size)  # known before loading
    assert dm.num_classes == 10
    assert dm.provides == {"image", "label"}
    assert dm.fid_features == "digits"
    ds = dm.split("train")
    item = ds[0]
    assert set(item) == {"image", "label"}
    assert item["image"].shape == (1, image_size, image_size)
    assert item["image"].dtype == torch.float32
    images = ds.images
    assert images.min().item() == -1.0
    assert images.max().item() == 1.0
    # Exactly on the 8-bit grid: the uint8 round trip is the identity.
    u8 = to_uint8(images)
    assert torch.equal(u8.float() / 127.5 - 1, images)
    assert torch.equal(to_uint8(u8.float() / 127.5 - 1), u8)
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert ds.labels.dtype == torch.long


def test_digits_resize_preserves_content():
    small = DigitsDataModule(image_size=8).split("train").images
    big = DigitsDataModule(image_size=32).split("train").images
    # Bilinear up-sampling keeps the mean brightness to within quantisation / border effects.
    assert (small.mean((1, 2, 3)) - big.mean((1, 2, 3))).abs().max().item() < 0.05


def test_digits_dataloaders(digits32):
    train = digits32.train_dataloader()
    assert train.drop_last is True
    assert len(train) == 1437 // 64
    batch = next(iter(train))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (64, 1, 32, 32)
    assert batch["label"].shape == (64,)
    val = digits32.val_dataloader()
    assert val.drop_last is False
    assert sum(b["image"].shape[0] for b in val) == 180
    assert len(digits32.test_dataloader()) == 3  # 180 / 64 rounded up
    assert len(digits32.dataloader("train", batch_size=500, drop_last=True)) == 2


def test_train_loader_shuffles_val_does_not(digits32):
    torch.manual_seed(0)
    first = next(iter(digits32.train_dataloader()))["label"]
    torch.manual_seed(1)
    second = next(iter(digits32.train_dataloader()))["label"]
    assert not torch.equal(first, second)
    val = next(iter(digits32.val_dataloader()))["label"]
    assert torch.equal(val, digits32.split("val").labels[:64])


# ---- image folder ---------------------------------------------------------------------------


def write_png(path: Path, seed: int, size: tuple[int, int] = (20, 24), mode: str = "RGB") -> np.ndarray:
    rng = np.random.RandomState(seed)
    array = rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path)
    return array


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    root = tmp_path / "flat"
    for i in range(20):
        write_png(root / f"img_{i:02d}.png", i)
    return root


@pytest.fixture
def class_folder(tmp_path) -> Path:
    root = tmp_path / "classes"
    for c, name in enumerate(["cat", "dog", "emu"]):
        for i in range(8):
            write_png(root / name / f"{i}.png", 100 * c + i)
    return root


def test_image_folder_unlabelled(flat_folder):
    dm = ImageFolderDataModule(str(flat_folder), image_size=16, channels=3, num_workers=0, batch_size=4)
    assert dm.provides == {"image"}
    assert dm.num_classes is None
    assert dm.image_shape == (3, 16, 16)
    assert len(dm.files) == 20
    sizes = {name: len(dm.split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 18, "val": 1, "test": 1}
    item = dm.split("train")[0]
    assert set(item) == {"image"}
    assert item["image"].shape == (3, 16, 16)
    assert item["image"].dtype == torch.float32
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image"}
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["image"].min() < -0.5 and batch["image"].max() > 0.5  # full range used


def test_image_folder_class_subfolders(class_folder):
    dm = ImageFolderDataModule(str(class_folder), image_size=8, load_size=12, channels=1, num_workers=0,
                               val_fraction=0.25, test_fraction=0.25)
    assert dm.provides == {"image", "label"}
    assert dm.num_classes == 3
    assert dm.classes == ["cat", "dog", "emu"]
    assert dm.image_shape == (1, 8, 8)
    assert dm.labels == [0] * 8 + [1] * 8 + [2] * 8
    labels = []
    for name in ("train", "val", "test"):
        ds = dm.split(name)
        for i in range(len(ds)):
            item = ds[i]
            assert set(item) == {"image", "label"}
            assert item["image"].shape == (1, 8, 8)
            assert item["image"].min() >= -1 and item["image"].max() <= 1
            # Each item's label is its file's sub-folder.
            assert dm.classes[item["label"]] == ds.files[i].parent.name
            labels.append(item["label"])
    assert sorted(labels) == dm.labels


def test_image_folder_single_subfolder_is_unlabelled(tmp_path):
    for i in range(3):
        write_png(tmp_path / "only" / f"{i}.png", i)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, num_workers=0)
    assert dm.num_classes is None and dm.provides == {"image"}


def test_image_folder_pixel_values_exact(tmp_path):
    # A constant image keeps its value through resize and crop: v / 255 * 2 - 1.
    root = tmp_path / "const"
    root.mkdir()
    for i, v in enumerate([0, 51, 255]):
        Image.new("RGB", (32, 24), (v, v, v)).save(root / f"{i}.png")
    dm = ImageFolderDataModule(str(root), image_size=16, channels=3, num_workers=0, val_fraction=0,
                               test_fraction=0, flip=False)
    ds = dm.split("train")
    values = sorted(round(ds[i]["image"].mean().item(), 5) for i in range(len(ds)))
    assert values == [-1.0, round(51 / 255 * 2 - 1, 5), 1.0]
    for i in range(len(ds)):
        assert ds[i]["image"].std().item() < 1e-6


def test_image_folder_resize_then_center_crop(tmp_path):
    # 40 wide x 20 high, left half black, right half white: the short side goes to 16 (32 x 16), and
    # the centre 16 x 16 crop holds 8 black then 8 white columns.
    root = tmp_path / "halves"
    array = np.zeros((20, 40), dtype=np.uint8)
    array[:, 20:] = 255
    root.mkdir()
    Image.fromarray(array).save(root / "a.png")
    Image.fromarray(array).save(root / "b.png")
    dm = ImageFolderDataModule(str(root), image_size=16, channels=1, num_workers=0, val_fraction=0,
                               test_fraction=0, flip=False)
    image = dm.split("train")[0]["image"]
    assert image.shape == (1, 16, 16)
    assert (image[:, :, :6] == -1).all()
    assert (image[:, :, 10:] == 1).all()


def test_image_folder_grayscale_to_rgb(tmp_path):
    root = tmp_path / "gray"
    for i in range(3):
        write_png(root / f"{i}.png", i, mode="L")
    dm = ImageFolderDataModule(str(root), image_size=8, channels=3, num_workers=0)
    image = dm.split("train")[0]["image"]
    assert image.shape == (3, 8, 8)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_image_folder_split_is_deterministic(flat_folder):
    a = ImageFolderDataModule(str(flat_folder), image_size=8, num_workers=0, val_fraction=0.2, test_fraction=0.2)
    b = ImageFolderDataModule(str(flat_folder), image_size=8, num_workers=0, val_fraction=0.2, test_fraction=0.2)
    files = {}
    for name in ("train", "val", "test"):
        assert a.split(name).files == b.split(name).files
        files[name] = set(a.split(name).files)
    assert len(files["val"]) == 4 and len(files["test"]) == 4 and len(files["train"]) == 12
    assert set().union(*files.values()) == set(a.files)


def test_image_folder_missing_folder(tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(GdmError) as err:
        ImageFolderDataModule(str(missing), num_workers=0)
    assert str(missing) in str(err.value)


def test_image_folder_path_is_a_file(tmp_path):
    path = tmp_path / "file.png"
    write_png(path, 0)
    with pytest.raises(GdmError) as err:
        ImageFolderDataModule(str(path), num_workers=0)
    assert str(path) in str(err.value)


def test_image_folder_empty_folder(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "notes.txt").write_text("no images here")
    with pytest.raises(GdmError) as err:
        ImageFolderDataModule(str(root), num_workers=0)
    assert str(root) in str(err.value)
    assert "no images" in str(err.value)


def test_image_folder_corrupt_png(flat_folder):
    bad = flat_folder / "broken.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(GdmError) as err:
        ImageFolderDataModule(str(flat_folder), num_workers=0)
    assert str(bad) in str(err.value)


def test_image_folder_truncated_png(flat_folder):
    good = flat_folder / "img_00.png"
    bad = flat_folder / "truncated.png"
    bad.write_bytes(good.read_bytes()[:60])  # valid signature, data cut short
    with pytest.raises(GdmError) as err:
        ImageFolderDataModule(str(flat_folder), num_workers=0)
    assert str(bad) in str(err.value)


def test_image_folder_verify_false_skips_check(flat_folder):
    (flat_folder / "broken.png").write_bytes(b"junk")
    dm = ImageFolderDataModule(str(flat_folder), num_workers=0, verify=False)
    assert len(dm.files) == 21


def test_image_folder_extensions_case_insensitive(tmp_path):
    root = tmp_path / "mixed"
    write_png(root / "a.PNG", 0)
    write_png(root / "b.png", 1)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "c.jpg")
    (root / "d.txt").write_text("x")
    dm = ImageFolderDataModule(str(root), image_size=8, num_workers=0)
    assert [p.name for p in dm.files] == ["a.PNG", "b.png", "c.jpg"]


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_image_folder_non_rgb_modes(tmp_path, mode):
    root = tmp_path / mode
    reference = tmp_path / f"{mode}_rgb"
    for i in range(3):
        write_png(root / f"{i}.png", i, mode=mode)
        with Image.open(root / f"{i}.png") as img:
            reference.mkdir(exist_ok=True)
            img.convert("RGB").save(reference / f"{i}.png")
    kwargs = dict(image_size=8, channels=3, num_workers=0, val_fraction=0, test_fraction=0, flip=False)
    got = ImageFolderDataModule(str(root), **kwargs).split("train")[0]["image"]
    expected = ImageFolderDataModule(str(reference), **kwargs).split("train")[0]["image"]
    assert got.shape == (3, 8, 8)
    torch.testing.assert_close(got, expected)
