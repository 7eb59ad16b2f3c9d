"""Helpers for tests that compose Hydra configs in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

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
