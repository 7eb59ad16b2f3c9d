"""Where a training run continues from: `ckpt_path=…/last.ckpt`, or `resume=auto`, which takes the newest
checkpoint of this run directory (`hydra.run.dir=DIR`): last.ckpt (the last evaluation), on_exception.ckpt
(a crash, Ctrl-C or SIGTERM) or hpc_ckpt_<n>.ckpt (Lightning's SLURM requeue). With nothing there yet the
run starts fresh, so one command line serves the first start and every restart:

    python run.py hydra.run.dir=outputs/long_run resume=auto       # run it again after a kill: it continues

A job that SLURM requeued resumes from its hpc checkpoint (Lightning's SLURM integration) without either.
A resumed run continues the same W&B run (its id is stored in the checkpoint), except the jobs of a sweep
given one `ckpt_path` to start from: each is a run of its own. A run directory that already holds
checkpoints is only reused with resume=auto, never overwritten by accident.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, open_dict

from gdm.callbacks.checkpoint_contents import WANDB_RUN_ID
from gdm.checkpoints import check_same_model, checkpoint_step, read_checkpoint
from gdm.errors import GdmError
from gdm.multirun import sweep_identity

log = logging.getLogger(__name__)
RESUME = (None, "auto")


def global_step(path: Path) -> int:
    try:  # memory-mapped: only the small entries are read
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
    except Exception:  # unreadable: never preferred (read_checkpoint says why if it is the only one)
        return -1


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most training steps (the newest file on a tie)."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "on_exception.ckpt",
                  *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: (global_step(p), p.stat().st_mtime_ns)) if existing else None


def requeued_slurm_checkpoint(run_dir: Path) -> Path | None:
    """The hpc checkpoint Lightning itself resumes from in a requeued SLURM job (the highest number)."""
    if not SLURMEnvironment.detect():
        return None
    numbered = [(int(p.stem.rsplit("_", 1)[1]), p) for p in run_dir.glob("hpc_ckpt_*.ckpt")
                if p.stem.rsplit("_", 1)[1].isdigit()]
    return max(numbered)[1] if numbered else None


def resume_from(cfg: DictConfig) -> tuple[Path, dict] | None:
    """The checkpoint this run continues from (checked to be a gdm checkpoint of this model class) and its
    contents, or None."""
    if cfg.get("resume") not in RESUME:
        raise GdmError(f"resume={cfg.resume} is not an option: use resume=auto (with hydra.run.dir=DIR) or "
                       "ckpt_path=FILE.")
    run_dir = Path(cfg.paths.output_dir)
    path = Path(cfg.ckpt_path).expanduser() if cfg.get("ckpt_path") else None
    if path is None and cfg.get("resume") == "auto":
        path = newest_checkpoint(run_dir)
        if path is None:
            log.info(f"resume=auto: no checkpoint in {run_dir} yet; starting from scratch.")
    path = path or requeued_slurm_checkpoint(run_dir)
    if path is None:
        existing = newest_checkpoint(run_dir) if cfg.get("resume") is None else None
        if existing is not None:
            raise GdmError(f"{run_dir} already holds checkpoints ({existing}): continue that run with resume=auto, "
                           "or pick a new hydra.run.dir.")
        return None
    checkpoint = read_checkpoint(path)
    check_same_model(cfg, checkpoint, path)
    # gdm's step (training batches), not Lightning's `global_step` (optimizer steps: 2 per GAN batch)
    log.info(f"resuming from {path} (step {checkpoint_step(checkpoint)}, epoch {checkpoint.get('epoch')})")
    run_id = checkpoint.get(WANDB_RUN_ID)
    # A sweep's jobs may all start from one given checkpoint: each is a run of its own. A job resuming its
    # own directory (resume=auto, a SLURM requeue) continues its run.
    fresh_runs = bool(cfg.get("ckpt_path")) and sweep_identity() is not None
    if run_id and "wandb" in (cfg.get("logger") or {}) and not fresh_runs:
        with open_dict(cfg):  # the same W&B run, resumed, unless the user named another
            cfg.logger.wandb.id = cfg.logger.wandb.get("id") or run_id
            cfg.logger.wandb.resume = "allow"
    return path, checkpoint
