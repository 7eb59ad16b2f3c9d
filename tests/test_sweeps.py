"""Hydra multirun through run.py: one directory per job, one W&B group per sweep, a summary of the jobs."""

from __future__ import annotations

import csv
import math
import os

import pytest
from helpers import CONF
from omegaconf import OmegaConf
from test_e2e import run_py


@pytest.mark.slow
def test_grid_sweep_writes_jobs_summary_and_groups_wandb_runs(tmp_path):
    sweep_dir = tmp_path / "multirun" / "day" / "time"
    proc = run_py("-m", "model=gan", "model.loss=vanilla,hinge", "data.image_size=16", "trainer.max_epochs=1",
                  "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "metrics.fid.num_samples=40",
                  "print_config=false", "logger.wandb.mode=offline", f"hydra.sweep.dir={sweep_dir}",
                  env_extra={"WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert ["model.loss=vanilla" in rows[0]["overrides"], "model.loss=hinge" in rows[1]["overrides"]] == [True, True]
    for row in rows:
        assert row["status"] == "finished" and row["metric"] == "val/fid_digits"
        assert math.isfinite(float(row["best"])) and float(row["best"]) > 0
    assert "sweep summary" in proc.stderr + proc.stdout
    for job in ("0", "1"):
        (run_file,) = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        # the W&B run name: the job's overrides, comma-joined (nowhere else in the run file)
        assert f"model=gan,model.loss={'vanilla' if job == '0' else 'hinge'},".encode() in run_file.read_bytes()


TINY_ARGS = ["data.image_size=16", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
             "+trainer.limit_val_batches=1", "metrics.fid.num_samples=40", "print_config=false", "logger=none"]


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_py("-m", "model.loss=nope,vanilla", *TINY_ARGS, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["failed", "finished"]
    assert "job 0 failed: model.loss='nope' is not a known GAN loss" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_optuna_sweep_minimises_the_returned_metric_and_resumes_from_sqlite(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for part in ("a", "b"):
        proc = run_py("-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=3" if part == "a" else
                      "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}", *TINY_ARGS,
                      f"hydra.sweep.dir={tmp_path / part}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    with (tmp_path / "a" / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["status"] == "finished" for r in rows)
    assert len({r["overrides"] for r in rows}) == 3  # TPE proposed three different trials
    results = OmegaConf.load(tmp_path / "a" / "optimization_results.yaml")
    assert results.best_value == pytest.approx(min(float(r["best"]) for r in rows))
    import optuna

    study = optuna.load_study(study_name="gan_optuna", storage=storage)
    assert len(study.trials) == 4  # the second sweep continued the stored study


def test_sweep_identity_is_the_sweep_dir_and_the_job_overrides(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from gdm.sweeps import configuration_tag, sweep_identity

    assert sweep_identity() is None  # not inside a Hydra job
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["seed=2"], return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "outputs" / "train" / "multirun" / "2026-11-24" / "10-00-00")
        cfg.hydra.job.num = 3
    try:
        HydraConfig.instance().set_config(cfg)
        assert sweep_identity() == ("multirun/2026-11-24/10-00-00", "seed=2")
        assert configuration_tag() == "config:(defaults)"  # the seed is not part of the configuration
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        assert sweep_identity() is None  # a single run keeps the configured group and name
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(tmp_path):
    """The launcher path of SLURM clusters (submitit), on this machine: each job in its own process."""
    sweep_dir = tmp_path / "sweep"
    proc = run_py("-m", "hydra/launcher=submitit_local", "seed=1,2", *TINY_ARGS, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "finished"), ("1", "finished")]
    assert all(math.isfinite(float(r["best"])) for r in rows)
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran both jobs


def test_slurm_launcher_writes_the_documented_sbatch_fields(tmp_path, monkeypatch):
    """hydra/launcher=submitit_slurm as submitted: one task per GPU, nodes and GPUs from the trainer, and
    Lightning's requeue signal (SIGUSR1) before the time limit. No SLURM here: the submission is caught."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import HydraContext
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")  # submitit checks that srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    class Submitted(Exception):
        pass

    def submit(executor, *args, **kwargs):
        raise Submitted(executor._executor._make_submission_file_text("COMMAND", "uid"))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=1440",
            "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=HydraContext(config_loader=None, callbacks=None), task_function=print, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["seed=1"]], initial_job_idx=0)
    script = str(submitted.value)
    for line in ("--partition=gpu", "--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=1440",
                 "--signal=USR1@120"):
        assert f"#SBATCH {line}\n" in script, line
    assert "--signal=USR2" not in script
