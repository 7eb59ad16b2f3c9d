"""A Hydra sweeper on Optuna's ask-and-tell API: `python run.py -m hparams_search=gan_optuna`.

Per batch of `n_jobs` trials: ask the study for trials, turn each into the job's overrides (its parameters,
the fixed overrides, and the trial's identity in the job's environment), launch the batch with whatever
launcher Hydra is configured with (basic, submitit), and tell the study each job's outcome: its returned
value, `pruned` when the job's pruning callback stopped it, or failed. Jobs report their evaluations to
the study's storage themselves (gdm/callbacks/optuna_pruning.py), so the pruner sees every evaluation of
every running trial, in this process or on another machine.

Optuna (samplers, pruners, storages) is imported when a sweep starts: Hydra imports every plugin at start-up,
and gdm without the `sweeps` extra must still run.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
DIRECTIONS = ("minimize", "maximize")


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, direction: str = "minimize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 1,
                 max_failure_rate: float = 1.0, pruner: Any = "none", pruners: DictConfig | None = None,
                 params: DictConfig | None = None) -> None:
        self.sampler_config, self.direction, self.storage = sampler, direction, storage
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, max(1, n_jobs)
        self.max_failure_rate = max_failure_rate
        self.pruner_config, self.pruners = pruner, pruners or {}
        self.params = params or {}
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """The search; a mistake in its settings (or a study it cannot continue) logs one sentence and exits with
        status 2, as a run's mistakes do (Hydra would print a traceback), the GdmError kept as the cause."""
        from gdm.errors import GdmError

        try:
            return self.search(arguments)
        except GdmError as err:
            log.error(str(err))
            raise SystemExit(2) from err

    def search(self, arguments: list[str]) -> list[JobReturn]:
        from gdm import optuna_search
        from gdm.errors import GdmError

        optuna = optuna_search.require_optuna()
        if self.direction not in DIRECTIONS:
            raise GdmError(f"hydra.sweeper.direction={self.direction} is not a direction: use minimize or "
                           "maximize (a gdm run returns one value, its best monitored metric).")
        distributions, fixed = optuna_search.search_space(
            [f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        n_trials, sampler = self.n_trials, self.build_sampler(distributions)
        grid = isinstance(sampler, optuna.samplers.GridSampler)
        if grid:
            n_trials = min(n_trials, math.prod(map(len, optuna_search.grid_choices(distributions).values())))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        pruner_config = self.pruner_config_node()
        pruner = self.build_pruner(pruner_config)  # before the storage: a bad pruner leaves no empty study behind
        objective = self.objective()
        url = optuna_search.storage_url(self.storage, sweep_dir)
        storage = optuna_search.open_storage(url)
        stored = optuna_search.stored_study(storage, self.study_name)
        if stored is not None:  # checked before any trial is asked for: a refused sweep leaves the study as it was
            changes = optuna_search.check_continuation(stored, storage, distributions, self.direction, objective)
            if changes:
                log.warning(f"continuing study {self.study_name} with a changed search space, which Optuna "
                            f"supports: {'; '.join(changes)}. Its earlier trials still inform the sampler and "
                            "count for the best trial.")
        study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction=self.direction, load_if_exists=True)
        optuna_search.record_study(study, distributions, objective)
        if study.trials and self.sampler_config.get("seed") is not None:
            # A continued study: the same seed would propose its first (random start-up) trials again.
            seed = self.sampler_config.seed + len(study.trials)
            study.sampler = self.build_sampler(distributions, seed=seed)
        log.info(f"Optuna study {study.study_name} ({len(study.trials)} trials so far) in {url}: {n_trials} "
                 f"trials, {type(sampler).__name__}, {type(study.pruner).__name__}, {self.direction} "
                 f"{objective['monitor']}")

        returns: list[JobReturn] = []
        failed = 0
        while len(returns) < n_trials:
            if grid and sampler.is_exhausted(study):
                log.info("every point of the grid has been tried")
                break
            trials = []
            try:
                for _ in range(min(self.n_jobs, n_trials - len(returns))):
                    trials.append(optuna_search.ask(study, distributions))  # a failed ask ends its trial FAIL
                batch = [self.trial_overrides(t, fixed, url, study.study_name, pruner_config) for t in trials]
                self.validate_batch_is_legal(batch)
                batch_returns = self.launch(trials, batch)
            except BaseException as err:  # a bad override or an interrupted sweep: no trial is left running
                for trial in trials:
                    optuna_search.fail(study, trial, f"before its job ran: {type(err).__name__}: {err}")
                raise
            for trial, ret in zip(trials, batch_returns):
                failed += self.tell(study, trial, ret) == optuna.trial.TrialState.FAIL
            returns += batch_returns
            if failed / len(returns) > self.max_failure_rate:
                raise GdmError(f"{failed} of {len(returns)} trials failed, more than hydra.sweeper."
                               f"max_failure_rate={self.max_failure_rate}: see their run.log in {sweep_dir}.")
        self.save_results(study, sweep_dir)
        return returns

    def objective(self) -> dict[str, str]:
        """What each trial returns (its best `monitor`, by `monitor_mode`), checked against the direction."""
        from gdm.errors import GdmError

        monitor, mode = str(self.config.get("monitor")), str(self.config.get("monitor_mode", "min"))
        objective = {"monitor": monitor, "monitor_mode": mode}
        if {"min": "minimize", "max": "maximize"}.get(objective["monitor_mode"]) != self.direction:
            raise GdmError(f"hydra.sweeper.direction={self.direction} but monitor_mode={objective['monitor_mode']}: "
                           f"each trial returns its best {objective['monitor']} by monitor_mode, so set "
                           "hydra.sweeper.direction=minimize with monitor_mode=min, or maximize with max.")
        return objective

    def build_sampler(self, distributions: dict, **overrides: Any) -> Any:
        import optuna

        from gdm import optuna_search

        if get_class(self.sampler_config._target_) is optuna.samplers.GridSampler:
            overrides["search_space"] = optuna_search.grid_choices(distributions)
        return instantiate(self.sampler_config, **overrides)

    def build_pruner(self, pruner_config: dict) -> Any:
        """The Optuna pruner of `pruner_config`; GdmError naming the config node when Optuna refuses a value."""
        from gdm.errors import GdmError

        try:
            return instantiate(pruner_config)
        except Exception as err:  # Hydra wraps the pruner's own ValueError in an InstantiationException
            cause = err.__cause__ or err
            key = (f"hydra.sweeper.pruners.{self.pruner_config}" if isinstance(self.pruner_config, str)
                   else "hydra.sweeper.pruner")
            raise GdmError(f"{key} ({pruner_config.get('_target_')}) was refused by Optuna: {cause}") from None

    def pruner_config_node(self) -> dict:
        """The pruner's config (with its `_target_`): the sweeper builds it, and so does every trial's job."""
        from gdm.errors import GdmError

        pruner = self.pruner_config
        if pruner is None:
            pruner = "none"
        if isinstance(pruner, str):
            if pruner not in self.pruners:
                raise GdmError(f"hydra.sweeper.pruner={pruner} is not a pruner: choose one of "
                               f"{', '.join(self.pruners)}, or give a node with a _target_.")
            pruner = self.pruners[pruner]
        if OmegaConf.is_config(pruner):
            return OmegaConf.to_container(pruner, resolve=True)
        return dict(pruner)

    @staticmethod
    def trial_overrides(trial, fixed: dict, url: str, study_name: str, pruner: dict) -> list[str]:
        from gdm import optuna_search

        return ([f"{key}={value}" for key, value in fixed.items()]
                + [f"{key}={optuna_search.override_value(value)}" for key, value in trial.params.items()]
                + optuna_search.trial_overrides(url, study_name, trial.number, pruner))

    def launch(self, trials: list, batch: list[list[str]]) -> list[JobReturn]:
        """Job number = trial number (the job's directory is the trial's), so a study continued in the same
        sweep directory never reuses a directory. Numbers that do not follow each other (another process asks
        the same study) are launched in runs of consecutive numbers."""
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(trials) + 1):
            if end == len(trials) or trials[end].number != trials[end - 1].number + 1:
                returns += self.launcher.launch(batch[start:end], initial_job_idx=trials[start].number)
                start = end
        return returns

    @staticmethod
    def tell(study, trial, ret: JobReturn):
        """Records the job's outcome in the study; returns the trial's state. A failed trial's reason goes to its
        user attribute `fail_reason` (gdm's jobs record their own: gdm/app.py)."""
        from optuna.trial import TrialState

        from gdm import optuna_search

        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else ""
        trial.set_user_attr("job_dir", job_dir)
        recorded = study.get_trials(deepcopy=False)[trial.number]
        if ret.status == JobStatus.COMPLETED and "pruned_at_step" in recorded.user_attrs:
            optuna_search.tell(study, trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        try:
            value = ret.return_value  # a failed job's exception is raised here
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            log.error(f"trial {trial.number} failed: {reason}")
        else:
            if value is not None and not math.isnan(float(value)):
                optuna_search.tell(study, trial, float(value))
                return TrialState.COMPLETE
            reason = f"the job returned {value} (see its run.log in {job_dir})"
        optuna_search.fail(study, trial, reason)
        return TrialState.FAIL

    def save_results(self, study, sweep_dir: Path) -> None:
        """optimization_results.yaml: the study's best trial (of all its sweeps, not only this one)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        results: dict[str, Any] = {"name": "optuna", "best_params": None, "best_value": None}
        if any(t.state == TrialState.COMPLETE for t in trials):
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info(f"best trial {best.number}: value {best.value} with {best.params}")
        results["trials"] = dict(Counter(t.state.name.lower() for t in trials))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
