"""Every file under conf/ composes into a config whose interpolations resolve."""

from __future__ import annotations

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

OPTIONS = sorted((p.parent.relative_to(CONF).as_posix(), p.stem) for p in CONF.rglob("*.yaml") if p.parent != CONF)
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def overrides_for(group: str, option: str) -> list[str]:
    if group == "data_model":  # picked by the data and model options, e.g. digits_colour_cyclegan
        (pair,) = [(d, m) for d in DATA for m in MODELS if f"{d}_{m}" == option]
        return [f"data={pair[0]}", f"model={pair[1]}"]
    if group == "hydra":
        return []  # conf/hydra/default.yaml is always in
    if group == "hydra/sweeper/sampler":  # a part of the Optuna sweeper's config
        return ["hydra/sweeper=optuna", f"{group}={option}"]
    if (group, option) == ("metrics", "translation"):
        return ["model=cyclegan", "metrics=translation"]  # translation metrics are for translation models
    if (group, option) == ("metrics", "pix2pix"):
        return ["model=pix2pix"]  # paired translation metrics are pix2pix's
    if group == "model/generator":  # pix2pix's generator options
        return ["model=pix2pix", f"model/generator={option}"]
    return [f"{group}={option}"]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} >= {"data", "model", "trainer", "logger", "metrics", "callbacks", "debug",
                                        "experiment", "hparams_search", "data_model", "hydra/launcher"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
@pytest.mark.slow
def test_every_config_file_composes(group, option, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides_for(group, option), f"paths.output_dir={tmp_path}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    job_cfg = cfg.copy()
    with open_dict(job_cfg):
        del job_cfg["hydra"]  # what the job sees; Hydra's own node holds run-time-only values (job.num)
    job = OmegaConf.to_container(job_cfg, resolve=True)  # raises on an interpolation that does not resolve
    assert job["paths"]["output_dir"] == str(tmp_path)
    if group == "data_model":
        assert job["data"]["_target_"] and job["model"]["_target_"]
    elif not group.startswith("hydra"):
        choices = cfg.hydra.runtime.choices
        choice = choices.get(group) or choices.get(f"{group}@{group.replace('/', '.')}")
        assert choice == option or group in ("experiment", "debug", "hparams_search"), choice
    if group.startswith("hydra/sweeper") or group == "hparams_search":
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        assert sweeper["_target_"].endswith("gdm_optuna_sweeper.optuna_sweeper.OptunaSweeper")
        assert sweeper["sampler"]["_target_"].startswith("optuna.samplers.")
        assert {"median", "hyperband", "successive_halving", "none"} <= set(sweeper["pruners"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    if group == "hydra/launcher":
        assert launcher["_target_"].endswith("SlurmLauncher")
        assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == job["trainer"]["devices"]
