"""`task=eval`: score a checkpoint with the same Evaluator as training and write `eval.json`.

    python run.py task=eval ckpt_path=RUN/checkpoints/best.ckpt [eval.num_samples=10000] [eval.split=test]

The model, data and metrics come from the config saved in the checkpoint; anything under model / data /
metrics set on the command line wins (e.g. `data.root=` where the data lives on this machine,
`metrics.features=dinov2`). Computed: the run's metrics (FID, precision / recall, density / coverage and
the copy fraction, plus KID here; class accuracy for conditional models; both directions' FID, cycle L1 and
label preservation for CycleGAN) with `eval.num_samples` generated samples against real `eval.split`
images, the validation losses, and the model's test metrics when it has them (the VAE's IWAE NLL). Each
value is printed beside its protocol (features and weights hash, resize, sample counts, split, seed) and
stored with it in eval.json, at the checkpoint's step.

`eval.sample_seeds=N` (N > 1) evaluates the same checkpoint N times, with sample seeds metrics.fid.seed + 0,
..., N-1, and adds to eval.json, per metric, the mean, std and Student-t interval over the sample seeds
("sample_seeds"): the spread from drawing other samples, to set beside the spread over training seeds
(`task=compare` shows both when given this directory). "metrics" holds the values of the first seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, open_dict

from gdm.checkpoints import checkpoint_step, config_for_checkpoint, load_state, read_checkpoint
from gdm.compare.stats import interval
from gdm.config_tree import print_config_tree
from gdm.data.base import SPLITS
from gdm.errors import GdmError
from gdm.evaluation.evaluator import Evaluator, write_json
from gdm.tasks.build import build_datamodule, build_evaluator, build_model, build_trainer, seed_option
from gdm.tasks.options import eval_options, read_options

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float | None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=eval needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.eval
    if opts.split not in SPLITS:
        raise GdmError(f"eval.split='{opts.split}' is not a split; choose one of {', '.join(SPLITS)}.")
    seeds = read_options(eval_options, "eval", opts)["sample_seeds"]
    L.seed_everything(seed_option(cfg), workers=True)  # the VAE's ELBO / IWAE draw from the global RNG
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
    if seeds > 1 and cfg.metrics.get("fid") is None:
        raise GdmError(f"eval.sample_seeds={seeds} draws other samples of a sampling model (metrics.fid.seed), and "
                       "this checkpoint's metrics have none: use eval.sample_seeds=1.")
    if cfg.get("print_config", True):
        print_config_tree(cfg)
    datamodule = build_datamodule(cfg)
    model = load_state(build_model(cfg, datamodule, from_checkpoint=True), checkpoint, cfg.ckpt_path)
    per_seed = []
    base_seed = cfg.metrics.fid.seed if seeds > 1 else None
    for i in range(seeds):
        if base_seed is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            with open_dict(cfg):
                cfg.metrics.fid.seed = base_seed + i
        evaluator = build_evaluator(cfg, report=None, save_checkpoints=False, step=checkpoint_step(checkpoint))
        trainer = build_trainer(cfg, [evaluator], loggers=[])
        trainer.validate(model, datamodule=datamodule, verbose=False)
        per_seed.append(evaluator)
    evaluator = per_seed[0]
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0] if is_overridden("test_step", model) else {}
    report = {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser().resolve()),
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "step": evaluator.final.get("step"),
        "global_step": checkpoint.get("global_step"),
        "epoch": checkpoint.get("epoch"),
        "split": opts.split,
        "metrics": {name: value for name, value in sorted({**evaluator.final, **test}.items())
                    if name.startswith(("val/", "test/"))},
        "protocols": evaluator.protocols,
    }
    if seeds > 1:
        report["sample_seeds"] = sample_seed_spread(per_seed, base_seed)
    write_report(report, evaluator, Path(cfg.paths.output_dir) / "eval.json")
    return report["metrics"].get(cfg.monitor)


def sample_seed_spread(evaluators: list[Evaluator], base_seed: int) -> dict[str, dict]:
    """Per metric: n, mean, std and interval over the sample seeds, with each seed's value."""
    spread = {}
    for name in evaluators[0].final:
        if not name.startswith("val/"):
            continue
        values = [ev.final[name] for ev in evaluators]
        spread[name] = {**interval(values).as_dict(), "values": values,
                        "sample_seeds": [base_seed + i for i in range(len(values))]}
    return spread


@rank_zero_only
def write_report(report: dict, evaluator: Evaluator, path: Path) -> None:
    write_json(path, report)
    tests = [f"  {name}  {value:.6g}" for name, value in report["metrics"].items() if name.startswith("test/")]
    spread = [f"  {name}  {s['mean']:.6g} ± {s['half_width']:.3g} (std {s['std']:.3g}, n {s['n']} sample seeds, "
              f"{s['confidence']:.0%} Student-t)" for name, s in report.get("sample_seeds", {}).items()]
    if spread:
        log.info("over sample seeds:\n" + "\n".join(spread))
    log.info(f"{report['model']} at step {report['step']} ({report['checkpoint']}), real split {report['split']}:\n"
             + evaluator.describe() + ("\n" + "\n".join(tests) if tests else ""))
    log.info(f"written: {path.resolve()}")
