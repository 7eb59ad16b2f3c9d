"""What a newcomer met on the way (issue 31): the config printed at start is a few lines, a piped run shows progress,
the digit features on colour images are warned about, task=eval says why its FID differs from training's. (A `+key`
the model lacks is one sentence: tests/test_docs.py runs the documented command.)"""

from __future__ import annotations

import logging

import pytest
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import OmegaConf

from gdm.console import EpochLines, config_summary, print_config, progress_bar
from gdm.errors import GdmError
from gdm.tasks.build import build_datamodule

CFG = OmegaConf.create({"task": "train", "model": {"_target_": "gdm.models.gan.GAN", "lr_g": 2e-4, "lr_d": 2e-4,
                                                   "generator": {"_target_": "x.Gen", "ngf": 8}}})


def test_config_summary_is_short_and_points_to_the_full_config(capsys):
    print_config(CFG)
    out = capsys.readouterr().out
    assert out == config_summary(CFG) + "\n"
    assert len(out.splitlines()) <= 3 and "print_config=full" in out


def test_print_config_full_prints_the_tree_and_false_nothing(capsys):
    print_config(OmegaConf.merge(CFG, {"print_config": "full"}))
    assert "lr_g" in capsys.readouterr().out
    print_config(OmegaConf.merge(CFG, {"print_config": False}))
    assert capsys.readouterr().out == ""
    with pytest.raises(GdmError, match="print_config=tree is not a choice"):
        print_config(OmegaConf.merge(CFG, {"print_config": "tree"}))


def test_progress_is_a_line_per_epoch_when_output_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert isinstance(progress_bar(), EpochLines)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(refresh_rate=3), RichProgressBar)


def test_digit_features_on_colour_images_are_warned_about(caplog):
    colour = OmegaConf.create({"data": {"_target_": "gdm.data.digits_colour.DigitsColourDataModule"},
                               "metrics": {"features": "digits"}})
    with caplog.at_level(logging.WARNING):
        build_datamodule(colour)
    assert [r.message for r in caplog.records if "metrics.features=digits" in r.message]
    caplog.clear()
    grey = OmegaConf.create({"data": {"_target_": "gdm.data.digits.DigitsDataModule"},
                             "metrics": {"features": "digits"}})
    with caplog.at_level(logging.WARNING):
        build_datamodule(grey)
    assert not [r for r in caplog.records if "metrics.features=digits" in r.message]


def test_eval_says_its_fid_uses_another_split_than_training(tmp_path, caplog):
    from gdm.tasks.evaluate import write_report

    report = {"model": "GAN", "step": 3, "checkpoint": "best.ckpt", "split": "test", "changed_from_checkpoint": [],
              "metrics": {"test/fid_digits": 41.0},
              "protocols": {"test/fid_digits": {"real_split": "test", "num_real": 180, "num_generated": 1000}}}
    with caplog.at_level(logging.INFO):
        write_report(dict(report), tmp_path / "eval.json", trained_split="train")
    assert ("FID here compares the samples with the test split's 180 images, training's with the train split"
            in caplog.text)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        write_report(dict(report), tmp_path / "eval.json", trained_split="test")
    assert "FID here compares" not in caplog.text


@pytest.mark.parametrize("task", ["sample", "translate"])
def test_a_checkpoint_tasks_summary_does_not_name_the_default_model(tmp_path, task):
    """The model comes from the checkpoint: the summary does not list the default groups (model=gan) as picked."""
    from helpers import run_py

    missing = tmp_path / "missing.ckpt"
    proc = run_py(f"task={task}", f"ckpt_path={missing}", "logger=none", f"hydra.run.dir={tmp_path / 'out'}")
    groups = next(line for line in proc.stdout.splitlines() if line.startswith("  groups: "))
    assert "model=" not in groups and "data=" not in groups and "metrics=" not in groups
    assert f"  model from the checkpoint: {missing}" in proc.stdout
