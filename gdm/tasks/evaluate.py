"""`task=eval`: score a checkpoint and write the numbers to `eval.json` in the run directory.

    python run.py task=eval ckpt_path=RUN/checkpoints/best.ckpt [eval.num_samples=10000] [eval.split=test]

The model, data and metrics come from the config saved in the checkpoint; anything under model / data /
metrics set on the command line wins (e.g. `data.root=` where the data lives on this machine). Computed:
the run's metrics (FID, plus KID here; class accuracy for conditional models; both directions' FID, cycle
L1 and label preservation for CycleGAN) with `eval.num_samples` generated samples against real `eval.split`
images, the validation losses, and the model's test metrics when it has them (the VAE's IWAE NLL, on the
test split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, open_dict

from gdm.checkpoints import config_for_checkpoint, load_state, read_checkpoint
from gdm.config_tree import print_config_tree
from gdm.data.base import SPLITS
from gdm.errors import GdmError
from gdm.tasks.build import build_datamodule, build_metrics, build_model, build_trainer

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float | None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=eval needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.eval
    if opts.split not in SPLITS:
        raise GdmError(f"eval.split='{opts.split}' is not a split; choose one of {', '.join(SPLITS)}.")
    L.seed_everything(cfg.seed, workers=True)  # the VAE's ELBO / IWAE draw from the global RNG
    checkpoint = read_checkpoint(cfg.ckpt_path)
    cfg = config_for_checkpoint(cfg, checkpoint)
    with open_dict(cfg):
        fid = cfg.metrics.get("fid")
        if fid is not None:
            fid.real_split = opts.split
            fid.num_samples = opts.num_samples or fid.num_samples
            fid.kid_subset_size = opts.kid_subset_size
        translation = cfg.metrics.get("translation")
        if translation is not None:
            translation.real_split = translation.split = opts.split
    if cfg.get("print_config", True):
        print_config_tree(cfg)
    datamodule = build_datamodule(cfg)
    model = load_state(build_model(cfg, datamodule), checkpoint, cfg.ckpt_path)
    trainer = build_trainer(cfg, build_metrics(cfg), loggers=[])
    results = dict(trainer.validate(model, datamodule=datamodule, verbose=False)[0])
    if is_overridden("test_step", model):
        results.update(trainer.test(model, datamodule=datamodule, verbose=False)[0])
    report = {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser().resolve()),
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "global_step": checkpoint.get("global_step"),
        "epoch": checkpoint.get("epoch"),
        "split": opts.split,
        "num_samples": fid.num_samples if fid is not None else None,
        "metrics": {name: float(value) for name, value in sorted(results.items())},
    }
    write_report(report, Path(cfg.paths.output_dir) / "eval.json")
    return report["metrics"].get(cfg.monitor)


@rank_zero_only
def write_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    width = max(map(len, report["metrics"]), default=0)
    lines = [f"  {name:<{width}}  {value:.6g}" for name, value in report["metrics"].items()]
    log.info(f"{report['model']} at step {report['global_step']} ({report['checkpoint']}), real split "
             f"{report['split']}:\n" + "\n".join(lines))
    log.info(f"written: {path.resolve()}")
