"""Helpers for tests that compose Hydra configs in-process."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Overrides that shrink any run to seconds while still training, validating, scoring FID and saving.
TINY_TRAINER = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
    "print_config=false",
]
TINY = [*TINY_TRAINER, "metrics.fid.num_samples=40"]
# model=diffusion / flow with a small U-Net and a 2-step sampler (the config's net and 16-18 steps cost seconds per
# evaluation on a CPU).
TINY_ITERATIVE = ["data.image_size=16", "model.net.channels=16", "model.net.num_res_blocks=1", "model.steps=2"]
# model=cyclegan (its metrics are the translation metrics, on the test images) with small nets.
TINY_CYCLEGAN = ["model=cyclegan", "data.image_size=32", "model.generator.ngf=8", "model.discriminator.ndf=8",
                 *TINY_TRAINER]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python run.py OVERRIDES` would get, with its run directory at `output_dir`."""
    HydraConfig.instance().cfg = None  # not a Hydra run: no stale choices from an earlier in-process one
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])
# model=pix2pix with small nets: a 5-level U-Net (32 px -> 1x1) on any paired data.
TINY_PIX2PIX = ["model=pix2pix", "data.image_size=32", "model.generator.num_downs=5", "model.generator.ngf=8",
                "model.discriminator.ndf=8", *TINY_TRAINER]


def run_py(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | {3: 0x03, 1: 0x01}[array.ndim]  # unsigned bytes, ndim dimensions
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, n_train: int = 50, n_test: int = 20) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def exif_rotated_jpeg(path, height: int = 6, width: int = 10, orientation: int = 6) -> np.ndarray:
    """A height x width JPEG whose EXIF says 'rotate 90 degrees clockwise'; returns the upright pixels."""
    stored = np.zeros((height, width), np.uint8)
    stored[:, : width // 2] = 255  # left half white as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100)
    return np.rot90(stored, k=-1)  # 90 degrees clockwise: 10 high x 6 wide, white on top


def truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def compose_typed(overrides: list[str], output_dir: Path) -> DictConfig:
    """As `compose_config`, with Hydra's record of what was typed (`HydraConfig`), which tasks on a checkpoint
    read to tell a typed value from a default."""
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
