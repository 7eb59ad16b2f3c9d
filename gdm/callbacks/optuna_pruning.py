"""A run that is an Optuna trial reports its monitored metric at every evaluation and stops when pruned.

Added to the run when gdm's Optuna sweeper named a trial in the job's environment (gdm/optuna_search.py):
each evaluation's `monitor` value goes to the study on the run's step axis (training batches), and when the
study's pruner says so the run stops like a finished one (`trainer.should_stop`), keeping its checkpoints
and summary, with `stop_reason = "pruned"` for whoever writes the run's status. A requeued or resumed job
has the same environment, so it goes on reporting to the same trial.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    def __init__(self, trial, monitor: str, mode: str = "min", run_dir: str | None = None):
        self.trial, self.monitor, self.mode = trial, monitor, mode
        self.run_dir = Path(run_dir) if run_dir else None
        self.stop_reason: str | None = None

    @classmethod
    def for_this_job(cls, monitor: str, mode: str = "min", run_dir: str | None = None):
        """The callback of the trial this job runs (named in its environment by gdm's sweeper), or None."""
        from gdm.optuna_search import trial_of_this_job

        trial = trial_of_this_job()
        return None if trial is None else cls(trial, monitor, mode, run_dir)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is None:
            return
        from optuna.trial import TrialState

        study = self.trial.study
        state = study.get_trials(deepcopy=False)[self.trial.number].state
        if state != TrialState.RUNNING:  # e.g. its run rerun by hand after the sweep: nothing to report to
            log.warning(f"Optuna trial {self.trial.number} of {study.study_name} is {state.name.lower()}: "
                        "this run does not report to it.")
            self.trial = None
            return
        if study.direction.name.lower() != {"min": "minimize", "max": "maximize"}[self.mode]:
            log.warning(f"the study {study.direction.name.lower()}s but monitor_mode={self.mode}: the pruner "
                        f"compares {self.monitor} the study's way.")
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "optuna_trial.json").write_text(json.dumps(
                {"study": study.study_name, "trial": self.trial.number}, indent=2))

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        step = int(trainer.callback_metrics["step"])  # the evaluation's step (training batches), as logged
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = float(trainer.callback_metrics[self.monitor])
            self.trial.report(value, step)
            # only while fitting: the evaluation after fit (trainer.validate) is reported, never pruned
            prune = trainer.state.fn == TrainerFn.FITTING and self.trial.should_prune()
            if prune:
                self.trial.set_user_attr("pruned_at_step", step)
                shown = f"{value:.4f}" if math.isfinite(value) else str(value)
                log.info(f"Optuna trial {self.trial.number} pruned at step {step} ({self.monitor} = {shown})")
        if trainer.strategy.broadcast(prune, src=0):  # every DDP rank stops at the same evaluation
            trainer.should_stop = True
            self.stop_reason = "pruned"
