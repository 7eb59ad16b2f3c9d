"""gdm's Optuna sweeper without training: search-space parsing, seeded trials, resume from storage, failed
and pruned trials (a toy objective in place of run.py's task), and the installed Optuna stack."""

from __future__ import annotations

import math
import re
import statistics
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from helpers import ROOT
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gdm.callbacks.optuna_pruning import OptunaPruning
from gdm.errors import GdmError
from gdm.optuna_search import (
    ask,
    describe,
    grid_choices,
    note_failure_of_this_job,
    open_storage,
    override_value,
    search_space,
    storage_url,
    suggest,
    trial_of_this_job,
)

GAN_SPACE = ["hparams_search=gan_optuna", "logger=none"]


def test_search_space_reads_hydra_sweep_syntax():
    distributions, fixed = search_space([
        "model.lr=tag(log, interval(1e-4, 1e-2))", "model.beta=interval(0.5, 2)", "model.depth=int(interval(2, 6))",
        "model.width=tag(log, int(interval(8, 256)))", "model.loss=choice(vanilla, hinge)",
        "data.batch_size=choice(32, 64)",
        "model.blocks=range(1, 10, 3)", "model.p=range(0.25, 1.0, 0.25)", "model.k=shuffle(range(1, 4))",
        "model.c=shuffle(choice(b, a))",
        "+trainer.limit_train_batches=2", "seed=3", "seed=4", "model.lr=tag(log, interval(1e-5, 1e-3))"])
    assert distributions == {
        "model.lr": FloatDistribution(1e-5, 1e-3, log=True),  # the later override of a key wins
        "model.beta": FloatDistribution(0.5, 2.0),
        "model.depth": IntDistribution(2, 6),
        "model.width": IntDistribution(8, 256, log=True),
        "model.loss": CategoricalDistribution(["vanilla", "hinge"]),
        "data.batch_size": CategoricalDistribution([32, 64]),
        "model.blocks": IntDistribution(1, 7, step=3),  # 1, 4, 7: range's stop is excluded, as in Python
        "model.p": FloatDistribution(0.25, 0.75, step=0.25),
        "model.k": IntDistribution(1, 3),  # shuffle() is for grid sweeps: a sampler picks its own order
        "model.c": CategoricalDistribution(["b", "a"]),
    }
    assert fixed == {"+trainer.limit_train_batches": "2", "seed": "4"}
    assert grid_choices({k: distributions[k] for k in ("model.loss", "model.blocks", "model.p")}) == {
        "model.loss": ["vanilla", "hinge"], "model.blocks": [1, 4, 7], "model.p": [0.25, 0.5, 0.75]}
    with pytest.raises(GdmError, match="sampler=grid needs discrete parameters, but model.beta is an interval"):
        grid_choices({"model.beta": distributions["model.beta"]})


def test_trial_values_read_back_as_the_same_overrides():
    values = ["vanilla", "a b", "it's", "32", "true", 3, 2.5e-05, True]
    overrides = [f"k{i}={override_value(v)}" for i, v in enumerate(values)]
    _, fixed = search_space(overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = [o.value() for o in OverridesParser.create().parse_overrides(overrides)]
    assert parsed == values and len(fixed) == len(values)


def test_storage_urls_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url(None, "sweep") == str(tmp_path / "sweep" / "optuna_study.journal")
    assert storage_url("sqlite:///study.db", "sweep") == f"sqlite:///{tmp_path / 'study.db'}"
    assert storage_url("study.journal", "sweep") == str(tmp_path / "study.journal")
    assert storage_url("postgresql://host/db", "sweep") == "postgresql://host/db"


def toy_objective(cfg) -> float:
    """A deterministic stand-in for training: lower for lr_g near 3e-4 and for hinge."""
    if cfg.model.loss == "vanilla" and cfg.get("fail_vanilla"):
        raise RuntimeError("vanilla diverged")
    return abs(math.log(cfg.model.lr_g / 3e-4)) + {"vanilla": 1.0, "lsgan": 0.5, "hinge": 0.0}[cfg.model.loss]


def run_toy_sweep(hydra_sweep_runner, sweep_dir: Path, objective, *overrides: str) -> list:
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "run.py"), calling_module=None, task_function=objective,
                               config_path="conf", config_name="config",
                               # the toy jobs write no summary.json: the sweep summary would count them failed
                               overrides=[*GAN_SPACE, "~hydra.callbacks.sweep_summary", *overrides],
                               temp_dir=sweep_dir)
    with sweep:
        assert sweep.returns is not None
        results = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
        job_dirs = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
        return [results, job_dirs]


def load(storage: str, name: str = "gan_optuna") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
@pytest.mark.slow
def test_same_seed_same_first_trials(hydra_sweep_runner, tmp_path, sampler):
    studies = []
    for run in ("a", "b", "c"):
        seed = 7 if run != "c" else 8
        run_toy_sweep(hydra_sweep_runner, tmp_path / run, toy_objective, "hydra.sweeper.n_trials=3",
                      f"hydra/sweeper/sampler={sampler}", f"hydra.sweeper.sampler.seed={seed}",
                      f"hydra.sweeper.storage={tmp_path / run}.journal")
        studies.append([t.params for t in load(f"{tmp_path / run}.journal").trials])
    assert studies[0] == studies[1] and len(studies[0]) == 3
    assert studies[0] != studies[2]  # and another seed, other trials


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
@pytest.mark.slow
def test_a_stored_study_resumes(hydra_sweep_runner, tmp_path, storage):
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage == "sqlite" else str(tmp_path / "study.journal")
    first, _ = run_toy_sweep(hydra_sweep_runner, tmp_path / "a", toy_objective, "hydra.sweeper.n_trials=3",
                             f"hydra.sweeper.storage={url}")
    second, job_dirs = run_toy_sweep(hydra_sweep_runner, tmp_path / "b", toy_objective, "hydra.sweeper.n_trials=2",
                                 f"hydra.sweeper.storage={url}")
    study = load(url)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert second["trials"] == {"complete": 5} and first["trials"] == {"complete": 3}
    assert second["best_value"] == pytest.approx(min(t.value for t in study.trials))
    # the second sweep's jobs are named by their trial numbers: no directory is reused
    assert job_dirs == ["3", "4"]
    # the continued search does not propose the first (seeded, random) trials again
    assert study.trials[3].params != study.trials[0].params and study.trials[4].params != study.trials[1].params


@pytest.mark.slow
def test_a_failed_trial_is_recorded_failed_and_the_search_goes_on(hydra_sweep_runner, tmp_path):
    results, _ = run_toy_sweep(hydra_sweep_runner, tmp_path / "s", toy_objective, "hydra.sweeper.n_trials=6",
                               "+fail_vanilla=true", "hydra/sweeper/sampler=random",
                               f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    study = load(str(tmp_path / "study.journal"))
    states = {t.params["model.loss"]: t.state for t in study.trials}
    assert states["vanilla"] == TrialState.FAIL and TrialState.COMPLETE in states.values()
    assert len(study.trials) == 6 and results["best_params"]["model.loss"] != "vanilla"


@pytest.mark.slow
def test_grid_sampler_stops_at_the_end_of_its_grid(hydra_sweep_runner, tmp_path):
    results, _ = run_toy_sweep(hydra_sweep_runner, tmp_path / "s", toy_objective, "hydra/sweeper/sampler=grid",
                               "model.lr_g=choice(1e-4, 3e-4)", "model.lr_d=0.0002",
                               "data.batch_size=32", "hydra.sweeper.n_trials=20",
                               f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    study = load(str(tmp_path / "study.journal"))
    assert sorted((t.params["model.lr_g"], t.params["model.loss"]) for t in study.trials) == sorted(
        (lr, loss) for lr in (1e-4, 3e-4) for loss in ("vanilla", "lsgan", "hinge"))
    assert results["best_params"] == {"model.lr_g": 3e-4, "model.loss": "hinge"} and results["best_value"] == 0


def evaluation(pruning: OptunaPruning, value: float, step: int, fn=TrainerFn.FITTING):
    """The trainer as OptunaPruning sees it at one evaluation."""
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/fid": value, "step": float(step)},
                              is_global_zero=True,
                              state=SimpleNamespace(fn=fn), strategy=SimpleNamespace(broadcast=lambda x, src: x),
                              should_stop=False)
    pruning.on_validation_end(trainer, None)
    return trainer


PRUNERS_SEEN: list[str] = []


def toy_training(cfg) -> float:
    """A run that evaluates 4 times: its curve falls from 30 + lr_g*1e4 to lr_g*1e4, reported through the
    pruning callback as run.py's jobs do; it stops when pruned."""
    pruning = OptunaPruning.for_this_job("val/fid", "min", None)
    assert pruning is not None  # the sweeper named the trial in the job's environment
    PRUNERS_SEEN.append(type(pruning.trial.study.pruner).__name__)
    value = math.nan
    for evaluation_number, step in enumerate((10, 20, 30, 40)):
        value = cfg.model.lr_g * 1e4 + 10 * (3 - evaluation_number)
        if evaluation(pruning, value, step).should_stop:
            assert pruning.stop_reason == "pruned"
            break
    return value


@pytest.mark.slow
def test_median_pruning_stops_trials_worse_than_the_median(hydra_sweep_runner, tmp_path):
    results, _ = run_toy_sweep(
        hydra_sweep_runner, tmp_path / "s", toy_training, "hydra/sweeper/sampler=grid",
        "model.lr_g=choice(1e-4, 2.5e-4, 5e-4, 0.5e-4, 3.2e-4)", "model.loss=hinge", "data.batch_size=32",
        "model.lr_d=0.0002",
        "hydra.sweeper.pruner=median", "hydra.sweeper.pruners.median.n_startup_trials=2", "hydra.sweeper.n_trials=5",
        f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    study = load(str(tmp_path / "study.journal"))
    # Replayed by hand (no value ties a median): after two finished trials, a trial whose first evaluation is worse
    # than the median of the finished trials' first evaluations stops there; the others run all four evaluations.
    finished: list[float] = []
    for trial in study.trials:
        value = trial.params["model.lr_g"] * 1e4 + 30
        if len(finished) >= 2 and value > statistics.median(finished):
            assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [10]
            assert trial.user_attrs["pruned_at_step"] == 10
        else:
            assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [10, 20, 30, 40]
            finished.append(value)
    assert results["trials"] == {"complete": len(finished), "pruned": 5 - len(finished)} and len(finished) < 5


def six_toy_trials_pruned_by(pruner: str, pruner_class: str, hydra_sweep_runner, tmp_path) -> tuple[dict, list]:
    """Six random-sampled toy trials under `hydra.sweeper.pruner=<pruner>`: the sweep's results and the study's
    trials, after checking that every job judged its reports with the sweep's pruner."""
    PRUNERS_SEEN.clear()
    results, _ = run_toy_sweep(
        hydra_sweep_runner, tmp_path / "s", toy_training, "hydra/sweeper/sampler=random",
        "model.loss=hinge", "data.batch_size=32", "model.lr_d=0.0002", f"hydra.sweeper.pruner={pruner}",
        "hydra.sweeper.n_trials=6", f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    # Each job judges its reports with the sweep's pruner.
    assert len(PRUNERS_SEEN) == 6 and set(PRUNERS_SEEN) == {pruner_class}
    assert sum(results["trials"].values()) == 6 and set(results["trials"]) <= {"complete", "pruned"}
    return results, load(str(tmp_path / "study.journal")).trials


@pytest.mark.slow
def test_hyperband_reaches_the_jobs(hydra_sweep_runner, tmp_path):
    six_toy_trials_pruned_by("hyperband", "HyperbandPruner", hydra_sweep_runner, tmp_path)


@pytest.mark.slow
def test_successive_halving_keeps_the_best_trial_and_prunes_at_rungs(hydra_sweep_runner, tmp_path):
    results, trials = six_toy_trials_pruned_by("successive_halving", "SuccessiveHalvingPruner", hydra_sweep_runner,
                                               tmp_path)
    # The toy curves never cross, so every rung ranks the trials by lr_g. Rungs at 1, 3, 9, 27 batches
    # (min_resource 1, reduction factor 3): the first report (step 10) passes three at once, step 30 the fourth.
    best = min(trials, key=lambda t: t.params["model.lr_g"])
    assert best.state == TrialState.COMPLETE and list(best.intermediate_values) == [10, 20, 30, 40]
    first, second = trials[:2]
    assert first.state == TrialState.COMPLETE  # nothing to compete with at any rung
    # the second trial goes on only when it beats the first (fewer than reduction_factor competitors)
    assert (second.state == TrialState.COMPLETE) == (second.params["model.lr_g"] < first.params["model.lr_g"])
    for trial in trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["pruned_at_step"] in (10, 30)
            assert trial.params["model.lr_g"] > best.params["model.lr_g"]
    assert results["trials"]["pruned"] >= 1


def test_a_value_optuna_refuses_names_the_pruner_node_and_leaves_no_study(hydra_sweep_runner, tmp_path):
    with pytest.raises(SystemExit) as stop:  # one sentence in the log, exit status 2, the GdmError as its cause
        run_toy_sweep(hydra_sweep_runner, tmp_path / "s", toy_objective, "hydra.sweeper.pruner=successive_halving",
                      "hydra.sweeper.pruners.successive_halving.reduction_factor=1",
                      f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    assert not (tmp_path / "study.journal").exists()
    assert stop.value.code == 2 and isinstance(stop.value.__cause__, GdmError)
    assert re.search(r"hydra.sweeper.pruners.successive_halving \(optuna.pruners.SuccessiveHalvingPruner\) was "
                     r"refused by Optuna: .*reduction_factor", str(stop.value.__cause__))


def test_pruning_reports_on_the_batch_axis_and_only_prunes_while_fitting(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s",
                                pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    pruning = OptunaPruning(trial, "val/fid")
    assert not evaluation(pruning, 0.5, 100).should_stop
    assert not evaluation(pruning, 5.0, 150, fn=TrainerFn.VALIDATING).should_stop  # trainer.validate after fit
    assert evaluation(pruning, 5.0, 200).should_stop and pruning.stop_reason == "pruned"
    assert study.trials[0].intermediate_values == {100: 0.5, 150: 5.0, 200: 5.0}
    assert study.trials[0].user_attrs == {"pruned_at_step": 200}


def test_a_job_finds_its_trial_in_its_environment(tmp_path, monkeypatch):
    url = str(tmp_path / "s.journal")
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    study.ask()
    second = study.ask()
    assert trial_of_this_job() is None  # not a trial: no pruning callback
    monkeypatch.setenv("GDM_OPTUNA_STORAGE", url)
    monkeypatch.setenv("GDM_OPTUNA_STUDY", "s")
    monkeypatch.setenv("GDM_OPTUNA_TRIAL", "1")
    monkeypatch.setenv("GDM_OPTUNA_PRUNER", '{"_target_":"optuna.pruners.ThresholdPruner","upper":1.0}')
    found = trial_of_this_job()
    assert found.number == 1 and isinstance(found.study.pruner, optuna.pruners.ThresholdPruner)
    found.report(3.0, 7)
    assert study.trials[second.number].intermediate_values == {7: 3.0}


def test_installed_optuna_stack_is_current_and_unpinned():
    """The install test's check (CI installs gdm plus optuna>=4 and sqlalchemy>=2 into a fresh venv): current
    majors are what runs these tests, and gdm's dependencies pin neither below them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert int(version("optuna").split(".")[0]) >= 4
    assert int(version("sqlalchemy").split(".")[0]) >= 2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for requirement in requirements:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        assert name != "hydra-optuna-sweeper", requirement
        if name in ("optuna", "sqlalchemy"):
            assert "<" not in requirement, requirement
    assert "optuna>=4" in project["optional-dependencies"]["sweeps"]


def two_sweeps(hydra_sweep_runner, tmp_path, *second: str, objective=toy_objective) -> tuple[str, list]:
    """A 2-trial sweep on an SQLite study, then a sweep with `second` overrides continuing it; the URL and the
    second sweep's results (raises what the second sweep raises)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_toy_sweep(hydra_sweep_runner, tmp_path / "a", toy_objective, "hydra.sweeper.n_trials=2",
                  f"hydra.sweeper.storage={url}")
    return url, run_toy_sweep(hydra_sweep_runner, tmp_path / "b", objective, "hydra.sweeper.n_trials=2",
                              f"hydra.sweeper.storage={url}", *second)


@pytest.mark.slow
def test_the_study_records_what_it_optimizes_and_its_search_space(hydra_sweep_runner, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_toy_sweep(hydra_sweep_runner, tmp_path / "a", toy_objective, "hydra.sweeper.n_trials=1",
                  f"hydra.sweeper.storage={url}")
    attrs = load(url).user_attrs
    assert attrs["monitor"] == "val/fid_digits" and attrs["monitor_mode"] == "min"
    assert attrs["search_space"].keys() == {"model.lr_g", "model.lr_d", "model.loss", "data.batch_size"}


@pytest.mark.parametrize(("second", "message"), [
    (["model.loss=choice(vanilla, hinge)"],
     "model.loss was choice(vanilla, lsgan, hinge) and is now choice(vanilla, hinge) (Optuna cannot change the "
     "choices of a stored parameter)"),
    (["model.lr_g=interval(5e-5, 1e-3)"],
     "model.lr_g was tag(log, interval(5e-05, 0.001)) and is now interval(5e-05, 0.001) (Optuna cannot change the "
     "log scale of a stored parameter)"),
    (["hydra.sweeper.direction=maximize", "monitor_mode=max"],
     "the study minimizes and this sweep has hydra.sweeper.direction=maximize"),
    (["monitor=val/kid_digits"], "the study optimizes monitor=val/fid_digits and this sweep has "
                                 "monitor=val/kid_digits"),
])
@pytest.mark.slow
def test_a_continued_study_that_optuna_cannot_continue_is_refused_before_any_trial(
        hydra_sweep_runner, tmp_path, second, message):
    with pytest.raises(SystemExit) as stop:  # one sentence in the log, exit status 2, the GdmError as its cause
        two_sweeps(hydra_sweep_runner, tmp_path, *second)
    assert stop.value.code == 2 and isinstance(stop.value.__cause__, GdmError)
    assert message in str(stop.value.__cause__)
    assert "start a new study with hydra.sweeper.study_name=gan_optuna_2" in str(stop.value.__cause__)
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # nothing asked, nothing left running
    assert not (tmp_path / "b" / "2").exists()


@pytest.mark.slow
def test_changed_bounds_and_dropped_parameters_continue_and_say_so(hydra_sweep_runner, tmp_path, capsys):
    url, (results, job_dirs) = two_sweeps(hydra_sweep_runner, tmp_path, "model.lr_g=tag(log, interval(1e-4, 2e-4))",
                                          "data.batch_size=64")
    study = load(url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4 and job_dirs == ["2", "3"]
    assert all(1e-4 <= t.params["model.lr_g"] <= 2e-4 and "data.batch_size" not in t.params for t in study.trials[2:])
    said = capsys.readouterr().out  # Hydra's logging configuration writes the sweeper's log to stdout
    assert "which Optuna supports: model.lr_g was tag(log, interval(5e-05, 0.001)) and is now tag(log, " \
           "interval(0.0001, 0.0002)); data.batch_size is no longer searched" in said


def test_an_incompatible_ask_ends_its_trial_failed_with_the_reason(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    ask(study, {"loss": CategoricalDistribution(["vanilla", "hinge"])})
    with pytest.raises(ValueError, match="dynamic value space"):  # what a stale check would meet in Optuna
        ask(study, {"loss": CategoricalDistribution(["vanilla"])})
    failed = study.trials[1]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith("while asking for its parameters: ValueError: ")


def test_a_sweep_interrupted_while_asking_leaves_no_trial_running(hydra_sweep_runner, tmp_path, monkeypatch):
    import gdm.optuna_search

    def broken(trial, name, dist):
        if trial.number == 1:
            raise KeyboardInterrupt
        return suggest(trial, name, dist)

    monkeypatch.setattr(gdm.optuna_search, "suggest", broken)
    with pytest.raises(KeyboardInterrupt):
        run_toy_sweep(hydra_sweep_runner, tmp_path / "s", toy_objective, "hydra.sweeper.n_jobs=2",
                      f"hydra.sweeper.storage={tmp_path / 'study.journal'}")
    trials = load(str(tmp_path / "study.journal")).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert trials[0].user_attrs["fail_reason"] == "before its job ran: KeyboardInterrupt: "
    assert trials[1].user_attrs["fail_reason"] == "while asking for its parameters: KeyboardInterrupt: "


def nan_for_hinge(cfg) -> float | None:
    return {"hinge": math.nan, "lsgan": None}.get(cfg.model.loss, 1.0)


@pytest.mark.slow
def test_every_failed_trial_has_its_reason(hydra_sweep_runner, tmp_path):
    run_toy_sweep(hydra_sweep_runner, tmp_path / "a", toy_objective, "hydra.sweeper.n_trials=6",
                  "+fail_vanilla=true", "hydra/sweeper/sampler=random", f"hydra.sweeper.storage={tmp_path / 'a.db'}")
    run_toy_sweep(hydra_sweep_runner, tmp_path / "b", nan_for_hinge, "hydra.sweeper.n_trials=6",
                  "hydra/sweeper/sampler=random", f"hydra.sweeper.storage={tmp_path / 'b.journal'}")
    reasons = {t.params["model.loss"]: t.user_attrs.get("fail_reason") for t in
               [*load(str(tmp_path / "a.db")).trials, *load(str(tmp_path / "b.journal")).trials]
               if t.state == TrialState.FAIL}
    assert reasons["vanilla"] == "RuntimeError: vanilla diverged"
    assert reasons["hinge"].startswith("the job returned nan (see its run.log in ")
    assert reasons["lsgan"].startswith("the job returned None")


def test_a_gdm_job_records_why_it_failed_in_its_trial(tmp_path, monkeypatch):
    url = str(tmp_path / "s.journal")
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    study.ask()
    note_failure_of_this_job("not a trial: nothing happens")
    monkeypatch.setenv("GDM_OPTUNA_STORAGE", url)
    monkeypatch.setenv("GDM_OPTUNA_STUDY", "s")
    monkeypatch.setenv("GDM_OPTUNA_TRIAL", "0")
    note_failure_of_this_job("data.root=x is not a folder")
    assert study.trials[0].user_attrs == {"fail_reason": "data.root=x is not a folder"}
    assert describe(FloatDistribution(0.5, 2.0, step=0.5)) == "range(0.5, 2.5, 0.5)"
    assert describe(IntDistribution(2, 8, log=True)) == "tag(log, int(interval(2, 8)))"


@pytest.mark.slow
def test_a_relative_storage_is_the_launch_directory_s_when_jobs_change_directory(hydra_sweep_runner, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_toy_sweep(hydra_sweep_runner, tmp_path / "s", toy_training, "hydra.job.chdir=true", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.storage=sqlite:///study.db")
    assert Path.cwd() == tmp_path
    trials = load(f"sqlite:///{tmp_path / 'study.db'}").trials  # the jobs (run in their own directories) reported here
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(list(t.intermediate_values) == [10, 20, 30, 40] for t in trials)
    assert not list((tmp_path / "s").rglob("study.db"))
