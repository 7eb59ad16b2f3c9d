"""run.py's command line before Hydra: a checkpoint task's model options reach gdm's checks, not Hydra's struct."""

from __future__ import annotations

import pytest
from helpers import run_py

from gdm.command_line import checkpoint_task_deletion, checkpoint_task_overrides


@pytest.mark.parametrize("task", ["eval", "sample", "translate"])
def test_a_checkpoint_tasks_model_options_pass_on_when_no_model_group_is_named(task):
    args = [f"task={task}", "ckpt_path=R/last.ckpt", "model.c_noise_scale=1.0", "+model.x=1", "eval.steps=8", "-m"]
    assert checkpoint_task_overrides(args) == [f"task={task}", "ckpt_path=R/last.ckpt", "++model.c_noise_scale=1.0",
                                               "+model.x=1", "eval.steps=8", "-m"]


@pytest.mark.parametrize("args", [
    ["model=diffusion", "model.c_noise_scale=1.0"],  # training: the group is composed, Hydra checks its keys
    ["task=eval", "ckpt_path=R/last.ckpt", "model=diffusion", "model.c_noise_scale=1.0"],  # a group named
    ["task=eval", "model.c_noise_scale=1.0"],  # no checkpoint: task=eval says it needs one
    ["ckpt_path=R/last.ckpt", "model.lr=0.1"],  # resuming a training run
])
def test_other_command_lines_are_left_as_typed(args):
    assert checkpoint_task_overrides(args) == args


def test_run_py_answers_a_model_option_on_a_checkpoint_with_gdms_sentence_not_hydras(tmp_path):
    proc = run_py("task=eval", f"ckpt_path={tmp_path / 'missing.ckpt'}", "model.c_noise_scale=1.0", "logger=none",
                  f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert f"ckpt_path={tmp_path / 'missing.ckpt'} is not a file" in proc.stderr + proc.stdout
    assert "not in struct" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("task", ["eval", "sample", "translate"])
def test_deleting_a_checkpoints_model_option_is_refused_in_one_sentence(task):
    args = [f"task={task}", "ckpt_path=R/last.ckpt", "~model.guidance"]
    instead = {"eval": "set model.guidance=VALUE to change a setting the checkpoint allows",
               "sample": "sample.sampler / sample.steps / sample.guidance choose how it samples",
               "translate": "translate.direction / translate.load_size choose how it translates"}[task]
    assert checkpoint_task_deletion(args) == (
        f"~model.guidance deletes an option, but task={task} takes the model from ckpt_path as it was trained, with "
        f"every option it had: drop ~model.guidance ({instead}).")
    assert checkpoint_task_deletion([f"task={task}", "ckpt_path=R/last.ckpt", "~model"]).startswith(
        f"~model deletes an option, but task={task} takes the model from ckpt_path")  # the whole group
    assert checkpoint_task_deletion(["~model.guidance", "model=diffusion"]) is None  # training: Hydra's group
    assert checkpoint_task_deletion([f"task={task}", "ckpt_path=R/last.ckpt", "model=diffusion",
                                     "~model.guidance"]) is None  # a model group named: Hydra deletes from it


def test_run_py_refuses_a_deleted_checkpoint_option_before_hydra(tmp_path):
    proc = run_py("task=eval", f"ckpt_path={tmp_path / 'x.ckpt'}", "~model.lr", "logger=none",
                  f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "~model.lr deletes an option, but task=eval takes the model from ckpt_path" in proc.stderr
    assert "does not exist" not in proc.stderr + proc.stdout
