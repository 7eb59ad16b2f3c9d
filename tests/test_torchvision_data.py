"""torchvision datasets: no download unless asked, a clear sentence when missing, and a working
module on MNIST-format files written here (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import fake_mnist
from pydantic import ValidationError
from torchvision import datasets

from gdm.data import torchvision_sets
from gdm.data.torchvision_sets import TorchvisionDataModule
from gdm.errors import GdmError


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_is_one_sentence(name, tmp_path):
    with pytest.raises(GdmError) as err:
        TorchvisionDataModule(name, root=str(tmp_path / name))
    message = str(err.value)
    assert f"{name} is not in root={tmp_path / name}" in message and "download=true" in message
    assert not any((tmp_path / name).rglob("*.gz"))  # nothing was fetched


def test_mnist_files_make_a_32px_labelled_module(tmp_path):
    data = TorchvisionDataModule("mnist", root=str(fake_mnist(tmp_path)), image_size=32, num_workers=0,
                                 batch_size=8)
    assert data.image_shape == (1, 32, 32) and data.provides == {"image", "label"}
    assert (len(data.split("train")), len(data.split("val")), len(data.split("test"))) == (45, 5, 20)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (8, 1, 32, 32)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].dtype.is_floating_point is False


def test_unknown_name(tmp_path):
    with pytest.raises(ValidationError) as caught:
        TorchvisionDataModule(name="svhn", root=str(tmp_path))
    assert [e["loc"] for e in caught.value.errors()] == [("name",)]


def test_class_counts_follow_the_split(tmp_path):
    data = TorchvisionDataModule("mnist", root=str(fake_mnist(tmp_path, n_train=50, n_test=20)), num_workers=0)
    train, test = data.class_counts("train"), data.class_counts("test")
    assert train.sum() == 45 and test.tolist() == [2] * 10  # test labels are 0..9 twice
    labels = [data.split("train")[i]["label"] for i in range(45)]
    assert train.tolist() == torch.bincount(torch.tensor(labels), minlength=10).tolist()


def test_download_happens_in_prepare_data_only(tmp_path, monkeypatch):
    """Lightning calls prepare_data on one process per node (other DDP ranks wait), so only it may download."""
    calls = []

    def mnist(root, train, download):
        calls.append((train, download))
        if download and not (Path(root) / "MNIST").exists():
            fake_mnist(Path(root))  # what the download would have written
        return datasets.MNIST(root, train=train, download=False)

    monkeypatch.setitem(torchvision_sets.SETS, "mnist", (mnist, *torchvision_sets.SETS["mnist"][1:]))
    data = TorchvisionDataModule("mnist", root=str(tmp_path), download=True, num_workers=0)
    assert calls == []
    data.prepare_data()
    assert calls == [(True, True), (False, True)]
    assert len(data.split("test")) == 20 and calls[2:] == [(True, False), (False, False)]
