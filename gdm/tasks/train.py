"""`task=train`: fit the model, keep checkpoints and summary.json, return the monitored metric."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from gdm.checkpoints import changed_settings, check_fits
from gdm.resume import resume_from
from gdm.tasks.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # DDP: ranks > 0 write no files
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    resume = resume_from(cfg)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    if resume is not None:
        check_fits(model, resume[1], resume[0])
        changed = changed_settings(model, resume[1])
        if changed:  # the restored optimizers and schedulers carry the checkpoint's learning rates and betas
            log.warning(f"resuming with model settings that differ from the checkpoint's ({'; '.join(changed)}): "
                        "optimizer and scheduler settings (lr, betas) stay as saved; start a new run to change them.")
    loggers = build_loggers(cfg)
    summary_path = run_dir / "summary.json"
    status = "failed"
    try:
        trainer = build_trainer(cfg, build_callbacks(cfg), loggers)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume[0]) if resume else None)
        evaluate_final_model(trainer, model, datamodule, summary_path)
        if cfg.get("test_after_fit", True) and is_overridden("test_step", model) and not trainer.interrupted:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        status = "success"
    except SIGTERMException:  # preempted: W&B shows the run as preempted, to be resumed
        status = "preempted"
        raise
    finally:
        finish_loggers(loggers, status)

    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    report(summary, run_dir, loggers)
    best = summary.get("best")
    return best["value"] if best else None


def evaluate_final_model(trainer: L.Trainer, model, datamodule, summary_path: Path) -> None:
    """A run that stopped between evaluations (trainer.max_steps, a time limit) is evaluated once more,
    so its final metrics, sample grids and checkpoints describe the final model."""
    if trainer.interrupted or trainer.sanity_checking or not trainer.limit_val_batches or trainer.fast_dev_run:
        return
    def read_summary() -> dict:  # written by rank 0: its reading decides for every DDP rank
        summary = json.loads(summary_path.read_text()) if trainer.is_global_zero and summary_path.exists() else {}
        return trainer.strategy.broadcast(summary, src=0)

    if read_summary().get("final", {}).get("global_step") == trainer.global_step:
        return
    trainer.validate(model, datamodule=datamodule, verbose=False)
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        # ModelCheckpoint does not save outside fit: save last, and best if this evaluation is the best.
        trainer.save_checkpoint(Path(checkpoint.dirpath) / "last.ckpt")
        best = read_summary().get("best") or {}
        if best.get("global_step") == trainer.global_step:
            path = str(Path(checkpoint.dirpath) / "best.ckpt")
            trainer.save_checkpoint(path)
            # The callback's own record too, so a resumed run compares later evaluations with this one.
            checkpoint.best_model_path, checkpoint.best_model_score = path, torch.tensor(best["value"])
            checkpoint.best_k_models = {path: checkpoint.best_model_score}
            checkpoint.kth_best_model_path, checkpoint.kth_value = path, checkpoint.best_model_score


def finish_loggers(loggers: list, status: str) -> None:
    """Close loggers even on failure, marking the run failed, so a sweep's next run starts clean,
    the data is flushed, and a crashed run does not show as finished in W&B."""
    for logger in loggers:
        finalize = getattr(logger, "finalize", None)
        if finalize is not None:
            finalize(status)
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        if status == "preempted" and wandb.run is not None:
            wandb.run.mark_preempting()
        wandb.finish(exit_code=0 if status == "success" else 1)


@rank_zero_only
def report(summary: dict, run_dir: Path, loggers: list) -> None:
    best, final = summary.get("best"), summary.get("final", {})
    monitor = summary.get("monitor")
    if monitor and monitor in final:
        log.info(f"final {monitor} = {final[monitor]:.4f} (step {final['global_step']})")
    if best:
        log.info(f"best  {best['metric']} = {best['value']:.4f} (step {best['global_step']}, epoch {best['epoch']})")
    log.info(f"run directory: {run_dir.resolve()}")
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            run = logger._experiment
            if getattr(run, "offline", False) or run.settings.mode == "offline":
                log.info(f"W&B offline run: {run.dir.rsplit('/files', 1)[0]} (upload: wandb sync <that dir>)")
