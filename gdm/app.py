"""From a composed config to a finished task, with user mistakes reported in one sentence."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue

from gdm.config_tree import print_config
from gdm.ddp import extra_ranks_run_this_job
from gdm.errors import GdmError
from gdm.optuna_search import note_failure_of_this_job
from gdm.tasks.compare import compare
from gdm.tasks.evaluate import evaluate
from gdm.tasks.paths import resolve_user_paths
from gdm.tasks.sample import sample
from gdm.tasks.train import train
from gdm.tasks.translate import translate

log = logging.getLogger("gdm")

TASKS = {"train": train, "eval": evaluate, "sample": sample, "translate": translate, "compare": compare}


def quiet_lightning() -> None:
    """The `lightning` package adds its own stderr handler even when Hydra has configured the root
    logger, so every Lightning message would print twice."""
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()


def user_error(err: BaseException) -> Exception | None:
    """The user mistake behind `err`, if it is (or wraps) one: ours, or Lightning's configuration
    complaints (e.g. `trainer=gpu` on a machine without a GPU)."""
    while err is not None:
        if isinstance(err, GdmError) and "Original Traceback" in str(err):
            # Raised in a DataLoader worker: torch re-raises it with the worker's traceback as its message.
            return GdmError(str(err).strip().splitlines()[-1].split(": ", 1)[-1])
        if isinstance(err, (GdmError, MisconfigurationException)):
            return err
        if isinstance(err, MissingMandatoryValue):
            return GdmError(f"{err.full_key} has no value: set it on the command line, e.g. {err.full_key}=...")
        if isinstance(err, InterpolationKeyError):  # e.g. metrics=translation with a model that has no translation
            return GdmError(f"{err.full_key} refers to a key this combination of options lacks ({err.msg.splitlines()[0]}): "
                            "check the options picked on the command line (python run.py --help lists them).")
        err = err.__cause__ or (err.__context__ if isinstance(err, InstantiationException) else None)
    return None


def run(cfg: DictConfig) -> float | None:
    if cfg.task not in TASKS:
        raise GdmError(f"task={cfg.task} is not a task; choose one of {', '.join(TASKS)}.")
    quiet_lightning()
    resolve_user_paths(cfg)  # against the launch directory, whatever hydra.job.chdir says
    if cfg.task not in ("eval", "compare"):  # eval: once merged with the checkpoint's
        print_config(cfg)
    with extra_ranks_run_this_job():
        return TASKS[cfg.task](cfg)


def main(cfg: DictConfig) -> float | None:
    """Hydra's task function: a user mistake prints one line and exits with status 2. In a sweep (-m) a
    failed job logs why and returns NaN instead, so the sweep goes on; Optuna records the trial as failed."""
    try:
        return run(cfg)
    except SIGTERMException:  # Lightning stopped after the current batch (training: wrote on_exception.ckpt)
        saved = Path(cfg.paths.output_dir) / "checkpoints" / "on_exception.ckpt"
        advice = (f"; checkpoint: {saved}; continue with the same command plus hydra.run.dir={cfg.paths.output_dir} "
                  "resume=auto" if cfg.task == "train" and saved.is_file() else "")
        log.error(f"stopped by SIGTERM{advice}")
        sys.exit(128 + signal.SIGTERM)
    except Exception as err:
        mistake = user_error(err)
        if in_multirun():
            note_failure_of_this_job(f"{type(err).__name__}: {err}" if mistake is None else str(mistake))
            if mistake is None:
                log.exception(f"job {HydraConfig.get().job.num} failed")
            else:
                log.error(f"job {HydraConfig.get().job.num} failed: {mistake}")
            return float("nan")
        if mistake is None:
            raise
        log.error(str(mistake))
        sys.exit(2)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
