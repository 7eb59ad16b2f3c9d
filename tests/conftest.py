"""Shared fixtures: no network, W&B never online."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def feature_cache_dir(tmp_path_factory) -> Path:
    """One real-feature cache for the session (metrics.cache_dir), never the user's ~/.cache/gdm."""
    return tmp_path_factory.mktemp("gdm-cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path, feature_cache_dir):
    monkeypatch.setenv("GDM_CACHE_DIR", str(feature_cache_dir))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


@pytest.fixture(scope="module")
def one_thread():
    """Small convolutions run fastest, and disturb a shared machine least, on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A tiny labelled image folder: two classes of 12 RGB 20x20 PNGs."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("circles", "squares"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.fixture
def unpaired_folder(tmp_path) -> Path:
    """A tiny unpaired dataset in the CycleGAN layout: trainA/ trainB/ testA/ testB/ of RGB PNGs of
    different sizes (A: 40x40, B: 48x36), 6 train and 3 test images per domain."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "unpaired"
    rng = np.random.default_rng(0)
    for folder, count in (("trainA", 6), ("trainB", 6), ("testA", 3), ("testB", 3)):
        (root / folder).mkdir(parents=True)
        shape = (40, 40, 3) if folder.endswith("A") else (36, 48, 3)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


@pytest.fixture
def paired_folder(tmp_path) -> Path:
    """A tiny paired dataset in the pix2pix layout: train/ (6) and test/ (3) of side-by-side A | B RGB PNGs,
    each 80x40 (A and B 40x40; B = A with its colour channels reversed, so the pairs are learnable)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "paired"
    rng = np.random.default_rng(0)
    for folder, count in (("train", 6), ("test", 3)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, a[..., ::-1]], 1)).save(root / folder / f"{i}.png")
    return root
