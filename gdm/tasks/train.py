"""`task=train`: fit the model (its Evaluator keeps checkpoints and summary.json), return the best value of
the monitored metric."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf, open_dict

from gdm.checkpoints import changed_data, changed_precision, changed_settings, check_fits
from gdm.evaluation.evaluator import Evaluator
from gdm.loggers import finish_loggers, start_loggers
from gdm.resume import resume_from
from gdm.tasks.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_model,
    build_trainer,
    check_evaluation,
    check_gradient_clipping,
    check_run_fits,
    check_training_precision,
    seed_option,
)
from gdm.tasks.options import check_run_options

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    check_training_precision(cfg.trainer.get("precision"))
    check_run_options(cfg)
    test_after_fit = cfg.get("test_after_fit", True)
    seed = L.seed_everything(seed_option(cfg), workers=True)
    with open_dict(cfg):
        cfg.seed = seed  # seed=null: the seed Lightning drew, recorded in config.yaml and the checkpoints
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # Nothing to continue, nor to keep from being overwritten, in a new run directory given neither option.
    resumable = (cfg.get("resume") is not None or cfg.get("ckpt_path")
                 or any(run_dir.glob("checkpoints/*.ckpt")) or any(run_dir.glob("hpc_ckpt_*.ckpt")))
    resume = resume_from(cfg) if resumable else None
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule, from_checkpoint=resume is not None, training=True)
    check_gradient_clipping(cfg, model)
    if resume is not None:
        check_fits(model, resume[1], resume[0], cfg)
        changed = changed_settings(model, resume[1], resume[0], cfg) + changed_data(cfg, resume[1])
        if changed:  # the restored optimizers and schedulers carry the checkpoint's learning rates and betas
            log.warning(f"resuming with settings that differ from the checkpoint's ({'; '.join(changed)}): the "
                        "run continues with them, except optimizer and scheduler settings (lr, betas), which "
                        "stay as saved; start a new run to change those.")
        precision = changed_precision(cfg, resume[1])
        if precision:
            log.warning(f"resuming with another arithmetic ({precision}): the run's steps before and after differ, so "
                        "its curves and results are not those of either precision alone; set it back to continue "
                        "the run as it was.")
    loggers = build_loggers(cfg)
    status = "failed"
    try:
        callbacks = build_callbacks(cfg)
        evaluator = next(cb for cb in callbacks if isinstance(cb, Evaluator))
        trainer = build_trainer(cfg, callbacks, loggers)
        check_run_fits(cfg, datamodule, trainer)
        check_evaluation(cfg, evaluator, model, datamodule)
        # config.yaml, once every check has passed: a run refused before training records no settings it never ran
        if rank_zero_only.rank == 0:  # DDP: ranks > 0 write no files
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        start_loggers(loggers, OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume[0]) if resume else None)
        evaluator.finish(trainer, model, datamodule)
        if test_after_fit and is_overridden("test_step", model) and not trainer.interrupted:
            best = run_dir / "checkpoints" / "best.ckpt"
            trainer.test(model, datamodule=datamodule, ckpt_path=str(best) if best.is_file() else None, verbose=False)
        status = "success"
    except SIGTERMException:  # preempted: W&B shows the run as preempted, to be resumed
        status = "preempted"
        raise
    finally:
        offline = finish_loggers(loggers, status)

    report(evaluator, run_dir, offline)
    return evaluator.best["value"] if evaluator.best else None


@rank_zero_only
def report(evaluator: Evaluator, run_dir: Path, offline_wandb: str | None) -> None:
    final, best = evaluator.final, evaluator.best
    if evaluator.monitor in final:
        log.info(f"final {evaluator.monitor} = {final[evaluator.monitor]:.4f} (step {final['step']})")
    if best:
        log.info(f"best  {best['metric']} = {best['value']:.4f} (step {best['step']}, epoch {best['epoch']})")
    log.info(f"run directory: {run_dir.resolve()}")
    if offline_wandb:
        log.info(f"W&B offline: {offline_wandb} (upload: wandb sync <that dir>)")
