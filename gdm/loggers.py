"""Weights & Biases that never hangs, and every logger-specific call gdm makes (images, run summary).

W&B runs online only with credentials and a reachable server:

`mode: auto` (the default) runs online when an API key is configured (WANDB_API_KEY or
`wandb login`) and the W&B host answers within a few seconds; otherwise it runs offline and
says, in one line, how to upload the run later. `mode: online` fails within seconds, in one
sentence, when it cannot be online. With `mode: auto`, `WANDB_MODE` in the environment decides when set; a
mode the config names wins over it, as `wandb.init`'s argument wins over the environment.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from gdm.errors import GdmError
from gdm.multirun import configuration_tag, sweep_identity

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(_base_url()).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def reachable(timeout: float = 3.0) -> bool:
    url = urlparse(_base_url())
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: str, key: str = "logger.wandb.mode") -> tuple[str, str | None]:
    """The W&B mode to use, and why it is offline when it falls back. `key`: the config key `mode` came from,
    named in the errors."""
    env = os.environ.get("WANDB_MODE")
    if env and {"dryrun": "offline", "run": "online"}.get(env, env) not in MODES:  # wandb reads it whatever `mode`
        raise GdmError(f"WANDB_MODE (in the environment)='{env}' is not a W&B mode; choose one of "
                       f"{', '.join(MODES)}, or unset it.")
    if env and mode == "auto":
        mode, key = {"dryrun": "offline", "run": "online"}.get(env, env), "WANDB_MODE (in the environment)"
    if mode not in MODES:
        raise GdmError(f"{key}='{mode}' is not a W&B mode; choose one of {', '.join(MODES)}.")
    if mode == "online":  # checked here: wandb.init would wait ~90 s for an unreachable server, then fail
        if not has_credentials():
            raise GdmError(f"{key}=online but no W&B credentials are set: run `wandb login` or set "
                           f"WANDB_API_KEY, or use {key}=offline (upload later with `wandb sync`).")
        if not reachable():
            raise GdmError(f"{key}=online but {_base_url()} is not reachable: check the network, or use "
                           f"{key}=offline (upload later with `wandb sync`) or auto (falls back).")
    if mode != "auto":
        return mode, None
    if not has_credentials():
        return "offline", "no W&B credentials (set WANDB_API_KEY or run `wandb login`)"
    if not reachable():
        return "offline", f"{_base_url()} is not reachable"
    return "online", None


def wandb_logger(save_dir: str, project: str = "gdm", mode: str = "auto", **kwargs) -> WandbLogger:
    mode, reason = resolve_mode(mode)
    sweep = sweep_identity()
    if sweep is not None:  # a multirun job: one W&B group per sweep, each run named by its overrides
        kwargs["group"] = kwargs.get("group") or sweep[0]
        kwargs["name"] = kwargs.get("name") or sweep[1]
        # the seeds of one configuration share a tag, across sweeps, for the dashboard to aggregate them
        kwargs["tags"] = [*(kwargs.get("tags") or []), configuration_tag()]
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # `mode` goes straight to wandb.init; WandbLogger(offline=True) would set WANDB_MODE for the whole process.
    logger = WandbLogger(save_dir=save_dir, project=project, mode=mode, **kwargs)
    if reason and rank_zero_only.rank == 0:  # DDP builds the loggers in every process; one line is enough
        log.warning(f"W&B offline: {reason}; upload later with `wandb sync {Path(save_dir) / 'wandb'}/offline-run-*`.")
    return logger


def log_images(loggers: list, grids: dict[str, torch.Tensor], step: int) -> None:
    """(C, H, W) uint8 grids as `images/<name>` at `step` (gdm's step axis, as the scalars of the same
    evaluation): W&B gets uint8 arrays (floats in [0, 1] would be saved black), TensorBoard the tensors."""
    for logger in loggers:
        for name, grid in grids.items():
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"images/{name}", images=[grid.permute(1, 2, 0).numpy()], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"images/{name}", grid, global_step=step)


def log_summary(loggers: list, values: dict) -> None:
    """Values for the W&B run summary (best value and step, each metric's protocol), beside its history."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key, value in values.items():
                logger.experiment.summary[key] = value


def start_loggers(loggers: list, config: dict) -> None:
    """Record the run's resolved config in every logger (W&B's run config, TensorBoard's hparams)."""
    for logger in loggers:
        logger.log_hyperparams(config)


def finish_loggers(loggers: list, status: str) -> str | None:
    """Close loggers even on failure, marking the run failed, so a sweep's next run starts clean,
    the data is flushed, and a crashed run does not show as finished in W&B. Returns the directory of an
    offline W&B run (to `wandb sync` later), else None."""
    for logger in loggers:
        finalize = getattr(logger, "finalize", None)
        if finalize is not None:
            finalize(status)
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return None
    import wandb

    offline = None
    if wandb.run is not None:
        if wandb.run.settings.mode in ("offline", "dryrun"):
            offline = wandb.run.dir.rsplit("/files", 1)[0]
        if status == "preempted":
            wandb.run.mark_preempting()
    wandb.finish(exit_code=0 if status == "success" else 1)
    return offline


def log_comparison(rows: list[dict], images: dict[str, Path], name: str, save_dir: Path, project: str = "gdm",
                   mode: str = "auto", group: str | None = None, key: str = "compare.wandb") -> str | None:
    """A W&B run of its own holding a comparison: `rows` as the table `comparison` and each image as
    `plots/<name>`. Returns where the run went (its URL, or its offline directory), None when disabled. `key`: the
    config key of `mode`."""
    mode, reason = resolve_mode(mode, key)
    if mode == "disabled" or not rows:
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name, group=group, job_type="compare", mode=mode, dir=str(save_dir),
                     reinit="create_new", settings=wandb.Settings(silent=True))
    try:
        columns = list(rows[0])
        run.log({"comparison": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows]),
                 **{f"plots/{key}": wandb.Image(str(path)) for key, path in images.items()}})
        where = run.url if mode == "online" else run.dir.rsplit("/files", 1)[0]
    finally:
        run.finish()
    if reason:
        log.warning(f"W&B offline: {reason}; upload later with `wandb sync {where}`.")
    return where


def wandb_run_id(loggers: list) -> str | None:
    """The id of the run's W&B run (kept in checkpoints, so a resumed run continues it), or None."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.version:
            return logger.version
    return None
