"""`task=train`: fit the model, keep checkpoints and summary.json, return the monitored metric."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from gdm.tasks.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    loggers = build_loggers(cfg)
    try:
        trainer = build_trainer(cfg, build_callbacks(cfg), loggers)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        resume = {"ckpt_path": cfg.ckpt_path} if cfg.get("ckpt_path") else {}
        trainer.fit(model, datamodule=datamodule, **resume)
        if cfg.get("test_after_fit", True) and is_overridden("test_step", model) and not trainer.interrupted:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    finally:
        finish_loggers(loggers)

    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    report(summary, run_dir, loggers)
    best = summary.get("best")
    return best["value"] if best else None


def finish_loggers(loggers: list) -> None:
    """Close W&B runs even on failure, so a sweep's next run starts clean and the data is flushed."""
    for logger in loggers:
        finalize = getattr(logger, "finalize", None)
        if finalize is not None:
            finalize("success")
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


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
