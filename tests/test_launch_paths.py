"""Paths a user types are read from the directory the command was launched from, also when Hydra runs the
job inside its run directory (`hydra.job.chdir=true`)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TINY
from omegaconf import OmegaConf

from gdm.app import resolve_user_paths


def launch(monkeypatch, launch_dir: Path, *args: str) -> None:
    """`python run.py ARGS` typed in `launch_dir`, run in this process (Hydra changes and restores the cwd)."""
    monkeypatch.chdir(launch_dir)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), *args])
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    assert Path.cwd() == launch_dir


@pytest.mark.slow
def test_relative_data_root_and_ckpt_path_are_read_from_the_launch_directory_with_chdir(
        monkeypatch, tmp_path, image_folder):
    assert image_folder == tmp_path / "images"
    launch(monkeypatch, tmp_path, "data=image_folder", "data.root=images", "data.image_size=16",
           "data.num_workers=0", "data.batch_size=8", "data.fid_features=digits", *TINY, "logger=none",
           "test_after_fit=false", "hydra.job.chdir=true", "hydra.run.dir=train_run")
    run_dir = tmp_path / "train_run"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert OmegaConf.load(run_dir / "config.yaml").data.root == str(image_folder)  # the record says what was read

    launch(monkeypatch, tmp_path, "task=sample", "ckpt_path=train_run/checkpoints/last.ckpt", "+sample.n=4",
           "print_config=false", "hydra.job.chdir=true", "hydra.run.dir=sample_run")
    assert len(list((tmp_path / "sample_run" / "samples").glob("*.png"))) >= 4


def test_every_user_path_key_is_made_absolute_and_interpolations_follow(tmp_path):
    cfg = OmegaConf.create({
        "paths": {"data_dir": "data", "output_dir": "/runs/x"},
        "data": {"root": "${paths.data_dir}/facades"},
        "ckpt_path": "runs/last.ckpt",
        "translate": {"input": "photos", "output": "~/out"},
        "compare": {"runs": ["sweep", str(tmp_path / "abs")]},
        "metrics": {"inception_weights": None, "dinov2_weights": "w/dinov2.pth", "cache_dir": "???"},
        "logger": {"csv": {"save_dir": "${paths.output_dir}"}, "tensorboard": {"save_dir": "tb"},
                   "wandb": {"save_dir": "${no_such_resolver:x}"}},
    })
    resolve_user_paths(cfg, base=tmp_path)
    assert cfg.paths.data_dir == str(tmp_path / "data")
    assert cfg.data.root == str(tmp_path / "data" / "facades")
    assert OmegaConf.to_container(cfg.data)["root"] == "${paths.data_dir}/facades"  # still follows data_dir
    assert cfg.ckpt_path == str(tmp_path / "runs" / "last.ckpt")
    assert cfg.translate.input == str(tmp_path / "photos")
    assert cfg.translate.output == "~/out"  # absolute already (each reader expands ~)
    assert list(cfg.compare.runs) == [str(tmp_path / "sweep"), str(tmp_path / "abs")]
    assert cfg.metrics.dinov2_weights == str(tmp_path / "w" / "dinov2.pth")
    assert cfg.metrics.inception_weights is None and OmegaConf.is_missing(cfg.metrics, "cache_dir")
    assert cfg.paths.output_dir == "/runs/x" and cfg.logger.csv.save_dir == "/runs/x"
    assert cfg.logger.tensorboard.save_dir == str(tmp_path / "tb")
