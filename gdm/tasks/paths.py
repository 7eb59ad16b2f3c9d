"""Paths a user gives are resolved against the directory the command was launched from.

With `hydra.job.chdir=true` Hydra runs a job inside its run directory, so a relative `data.root=images`
would name `RUN_DIR/images`. `resolve_user_paths` makes every path-valued key absolute once, before a task
builds anything, so every task, every record (config.yaml, checkpoints, W&B) and every error message sees
the path that was used. The sweeper resolves its own `hydra.sweeper.storage` (gdm/optuna_search.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# Keys that hold a user's path or a list of them; `paths.data_dir` first, so the data configs'
# `root: ${paths.data_dir}/<name>` follows it and keeps its interpolation.
USER_PATHS = ("paths.data_dir", "data.root", "ckpt_path", "translate.input", "translate.output", "compare.runs",
              "metrics.inception_weights", "metrics.dinov2_weights", "metrics.cache_dir")


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
