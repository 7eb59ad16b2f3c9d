"""Hydra multirun through run.py: one directory per job, one W&B group per sweep, a summary of the jobs."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
from helpers import CONF, run_py
from omegaconf import OmegaConf


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
def test_a_failed_job_is_recorded_the_sweep_goes_on_and_its_exit_status_says_so(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_py("-m", "model.loss=nope,vanilla", *TINY_ARGS, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["failed", "finished"]
    out = proc.stderr + proc.stdout
    assert "job 0 failed: model.loss='nope' must be one of vanilla, lsgan, hinge, wgan-gp" in out
    assert "1 of 2 jobs did not finish (jobs 0; each job's run.log says why): exit status 1." in out


@pytest.mark.slow
def test_a_sweep_whose_only_job_failed_exits_non_zero(tmp_path):
    """The issue's case: the same command without -m exits 2; with -m it used to exit 0."""
    proc = run_py("-m", "data=image_folder", "data.root=/nonexistent", "debug=fdr", f"hydra.sweep.dir={tmp_path}",
                  timeout=120)
    assert proc.returncode == 1
    assert "1 of 1 jobs did not finish" in proc.stderr + proc.stdout


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
    assert [p.name for p in (tmp_path / "b").iterdir() if p.is_dir()] == ["3"]  # job directory = trial number
    # A third sweep whose choices Optuna cannot continue: one sentence and exit status 2, as a run's mistakes
    proc = run_py("-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=1", "model.loss=choice(vanilla,hinge)",
                  f"hydra.sweeper.storage={storage}", *TINY_ARGS, f"hydra.sweep.dir={tmp_path / 'c'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "hydra.sweeper.study_name=gan_optuna cannot be continued by this sweep" in out and "Traceback" not in out
    assert len(optuna.load_study(study_name="gan_optuna", storage=storage).trials) == 4  # nothing asked


# Three evaluations per trial (one per epoch), so that a pruner has something to stop.
PRUNABLE_ARGS = [*TINY_ARGS, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1"]
# Prunes every trial at its first evaluation (FID > 0): which trial a pruner stops is then known in advance.
ALWAYS_PRUNE = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:0.0}"


def study_of(storage: str, name: str = "gan_optuna"):
    import optuna

    from gdm.optuna_search import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


@pytest.mark.slow
def test_a_pruned_trial_ends_cleanly_and_a_failed_one_is_recorded(tmp_path):
    """Grid over a bad and a good loss: the bad trial fails, the good one is pruned at its first evaluation;
    the pruned run keeps its checkpoints, samples and summary, and says `pruned` everywhere."""
    sweep_dir = tmp_path / "sweep"
    proc = run_py("-m", "hparams_search=gan_optuna", "hydra/sweeper/sampler=grid", "model.loss=choice(nope,hinge)",
                  "model.lr_g=0.0002", "model.lr_d=0.0002", "data.batch_size=32", ALWAYS_PRUNE,
                  *[a for a in PRUNABLE_ARGS if a != "logger=none"], "logger.wandb.mode=offline",
                  f"hydra.sweep.dir={sweep_dir}", env_extra={"WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    assert proc.returncode == 1, proc.stderr[-2000:]  # the failed trial; a pruned one counts as done
    assert "1 of 2 jobs did not finish" in proc.stdout + proc.stderr
    with (sweep_dir / "sweep_summary.csv").open() as f:
        rows = {r["status"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"failed", "pruned"} and "model.loss=hinge" in rows["pruned"]["overrides"]
    from optuna.trial import TrialState

    study = study_of(str(sweep_dir / "optuna_study.journal"))  # storage: null keeps the study in the sweep dir
    trials = {t.params["model.loss"]: t for t in study.trials}
    assert trials["nope"].state == TrialState.FAIL and trials["hinge"].state == TrialState.PRUNED
    pruned_dir = sweep_dir / str(trials["hinge"].number)
    assert rows["pruned"]["dir"] == str(pruned_dir)
    summary = json.loads((pruned_dir / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["monitor"] == "val/fid_digits"
    assert summary["best"]["metric"] == "val/fid_digits" and math.isfinite(summary["best"]["value"])
    assert summary["step"] == 2  # stopped after the first of three epochs (2 batches each)
    assert list(trials["hinge"].intermediate_values.values()) == [summary["best"]["value"]]
    assert trials["hinge"].user_attrs["pruned_at_step"] == next(iter(trials["hinge"].intermediate_values))
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "config.yaml", "optuna_trial.json"):
        assert (pruned_dir / name).is_file(), name
    assert list((pruned_dir / "samples").glob("*.png"))
    assert json.loads((pruned_dir / "optuna_trial.json").read_text())["trial"] == trials["hinge"].number
    (run_file,) = (pruned_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"pruned" in run_file.read_bytes()  # W&B summary: status pruned
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value is None and dict(results.trials) == {"fail": 1, "pruned": 1}


@pytest.mark.slow
def test_submitit_local_trials_report_to_the_shared_study_and_are_pruned(tmp_path):
    """Two trials in parallel processes (hydra/launcher=submitit_local, as on SLURM) report each evaluation to
    the study's journal file; the pruner stops both there, and the sweep records them pruned."""
    sweep_dir, storage = tmp_path / "sweep", tmp_path / "shared" / "study.journal"
    proc = run_py("-m", "hparams_search=gan_optuna", "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage={storage}", ALWAYS_PRUNE, *PRUNABLE_ARGS,
                  f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as f:
        assert [(r["job"], r["status"]) for r in csv.DictReader(f)] == [("0", "pruned"), ("1", "pruned")]
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2  # each trial in its own process
    from optuna.trial import TrialState

    trials = study_of(str(storage)).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(len(t.intermediate_values) == 1 for t in trials)


@pytest.mark.slow
def test_a_resumed_trial_reports_to_the_same_trial(tmp_path):
    """A trial's job started again with the same overrides (SLURM requeue; here resume=auto in its directory)
    finds the same trial and goes on reporting on the same step axis."""
    import optuna

    from gdm.optuna_search import open_storage, trial_overrides

    storage = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    trial = study.ask()
    env = {o.split("=", 1)[0].rsplit(".", 1)[1]: o.split("=", 1)[1].strip("'") for o in
           trial_overrides(storage, "s", trial.number, {"_target_": "optuna.pruners.NopPruner"})}
    run_dir = tmp_path / "trial"
    for epochs in (2, 3):
        proc = run_py(*[a for a in PRUNABLE_ARGS if not a.startswith("trainer.max_epochs")],
                      f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}", "resume=auto", env_extra=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        steps = list(study_of(storage, "s").trials[0].intermediate_values)
        assert len(steps) == epochs and steps == sorted(steps)  # the resumed run adds the third evaluation
    assert json.loads((run_dir / "optuna_trial.json").read_text()) == {"study": "s", "trial": 0}


def test_sweep_identity_is_the_sweep_dir_and_the_job_overrides(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from gdm.multirun import configuration_tag, sweep_identity

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


def test_jobs_of_other_tasks_finish_by_what_their_task_writes(tmp_path):
    """A multirun of task=sample / eval / translate / compare writes no summary.json: each job has finished when it
    wrote its task's output (grid.png, eval.json, the translate.output folder's files, report.md)."""
    from gdm.tasks.sweep_summary import job_rows

    def job(name: str, task: str, writes: str | None, config: str = "") -> None:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(f"task: {task}\n{config}")
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- task={task}\n")
        if writes:
            (tmp_path / name / writes).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / writes).write_text("{}")

    job("0", "sample", "grid.png")
    job("1", "sample", None)  # stopped before its grid
    job("2", "eval", "eval.json")
    job("3", "translate", "out/a.png", f"translate:\n  output: {tmp_path / '3' / 'out'}\n")
    job("4", "translate", None, f"translate:\n  output: {tmp_path / '4' / 'out'}\n")
    job("5", "compare", "report.md")
    job("6", "train", None)  # training without summary.json: failed before it started
    assert [r["status"] for r in job_rows(tmp_path)] == [
        "finished", "failed", "finished", "finished", "failed", "finished", "failed"]


def test_an_eval_multirun_summary_names_the_metric_each_job_measured(tmp_path, caplog):
    """`python run.py -m task=eval ckpt_path=A,B`: the summary's value column is each job's value of the
    checkpoint's monitored metric (eval.json's "monitor": a VAE's val/elbo), under the name task=eval gave it, not
    an empty "best" column, nor the FID that the job's own config (the defaults) monitors."""
    import logging

    from omegaconf import OmegaConf

    from gdm.tasks.sweep_summary import SweepSummary, job_rows

    for job, elbo in (("0", -711.5), ("1", -690.25)):
        d = tmp_path / job
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text("task: eval\nmonitor: val/fid_digits\n")
        (d / ".hydra" / "overrides.yaml").write_text(f"- task=eval\n- ckpt_path=/runs/{job}/last.ckpt\n")
        (d / "eval.json").write_text(json.dumps({
            "step": 40, "monitor": "val/elbo", "metrics": {"test/fid_digits": 2640.3, "val/elbo": elbo},
            "protocols": {"test/fid_digits": {"id": "abc"}, "val/elbo": {"id": "def"}},
            "names_in_training": {"test/fid_digits": "val/fid_digits"}}))
    rows = job_rows(tmp_path)
    assert [(r["metric"], r["best"], r["protocol"]) for r in rows] == [
        ("val/elbo", -711.5, "def"), ("val/elbo", -690.25, "def")]
    with caplog.at_level(logging.INFO, logger="gdm.tasks.sweep_summary"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    table = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep summary"))
    header, first, second = table.splitlines()[1:4]
    assert header.endswith("status    val/elbo") and "best" not in header
    assert first.endswith("-711.5000") and second.endswith("-690.2500")
    (tmp_path / "1" / "eval.json").write_text(json.dumps({"metrics": {"val/elbo": 1.0}}))  # an older gdm's: no monitor
    assert job_rows(tmp_path)[1]["metric"] == "" and job_rows(tmp_path)[1]["best"] == ""
