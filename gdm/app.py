"""From a composed config to a finished task, with user mistakes reported in one sentence.

Paths a user gives are resolved against the directory the command was launched from.

With `hydra.job.chdir=true` Hydra runs a job inside its run directory, so a relative `data.root=images`
would name `RUN_DIR/images`. `resolve_user_paths` makes every path-valued key absolute once, before a task
builds anything, so every task, every record (config.yaml, checkpoints, W&B) and every error message sees
the path that was used. The sweeper resolves its own `hydra.sweeper.storage` (gdm/optuna_search.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue, OmegaConfBaseException

from gdm.console import print_config
from gdm.errors import GdmError
from gdm.multirun import extra_ranks_run_this_job
from gdm.optuna_search import note_failure_of_this_job
from gdm.tasks.compare import compare
from gdm.tasks.evaluate import evaluate
from gdm.tasks.sample import sample
from gdm.tasks.train import train
from gdm.tasks.translate import translate

log = logging.getLogger("gdm")

TASKS = {"train": train, "eval": evaluate, "sample": sample, "translate": translate, "compare": compare}

# Keys that hold a user's path or a list of them; `paths.data_dir` first, so the data configs'
# `root: ${paths.data_dir}/<name>` follows it and keeps its interpolation.
USER_PATHS = ("paths.data_dir", "data.root", "ckpt_path", "model.autoencoder", "translate.input", "translate.output",
              "compare.runs", "metrics.inception_weights", "metrics.dinov2_weights", "metrics.cache_dir")


def launch_dir() -> Path:
    """The directory the command was launched from (Hydra's original working directory), else the current one."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def absolute(path: str, base: Path) -> str:
    """`path` with `~` expanded, joined to `base` when relative; normalised without resolving links."""
    return os.path.normpath(base / Path(path).expanduser())


def resolve_user_paths(cfg: DictConfig, base: Path | None = None) -> None:
    """In place: each relative path under `USER_PATHS` and each logger's `save_dir` (a string, or a list of
    strings) made absolute against `base` (default: the launch directory). Absent, null and already absolute
    values, interpolations that resolve to an absolute path, and values that do not resolve (the task that
    reads them says why) are left as they are."""
    base = base or launch_dir()
    loggers = cfg.get("logger") or {}
    keys = (*USER_PATHS, *(f"logger.{name}.save_dir" for name in loggers))  # defaults: the run directory
    with open_dict(cfg):
        for key in keys:
            try:
                value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            except OmegaConfBaseException:
                continue
            if isinstance(value, str) and not os.path.isabs(os.path.expanduser(value)):
                OmegaConf.update(cfg, key, absolute(value, base), merge=False)
            elif isinstance(value, ListConfig):
                OmegaConf.update(cfg, key, [absolute(str(v), base) for v in value], merge=False)


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
            return GdmError(f"{err.full_key} refers to a key this combination of options lacks "
                            f"({err.msg.splitlines()[0]}): "
                            "check the options picked on the command line (python run.py --help lists them).")
        err = err.__cause__ or (err.__context__ if isinstance(err, InstantiationException) else None)
    return None


def check_task_options(cfg: DictConfig) -> None:
    """An option typed for another task (`sample.steps=8` under task=eval) would be ignored: one sentence naming
    this task's own option where it has one."""
    from gdm.checkpoints import command_line_keys

    for key, _ in command_line_keys():
        group, _, name = key.partition(".")
        if group in TASKS and group != cfg.task and name:
            instead = f"set {cfg.task}.{name}= instead" if name in (cfg.get(cfg.task) or {}) else "drop it"
            raise GdmError(f"{key} is an option of task={group}, and this run is task={cfg.task}, which would ignore "
                           f"it: {instead}.")


def run(cfg: DictConfig) -> float | None:
    if cfg.task not in TASKS:
        raise GdmError(f"task={cfg.task} is not a task; choose one of {', '.join(TASKS)}.")
    check_task_options(cfg)
    quiet_lightning()
    resolve_user_paths(cfg)  # against the launch directory, whatever hydra.job.chdir says
    if cfg.task not in ("eval", "compare"):  # eval: once merged with the checkpoint's
        print_config(cfg)
    if not in_multirun():
        return TASKS[cfg.task](cfg)
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
