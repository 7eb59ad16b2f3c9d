"""The one owner of evaluation: when it runs, what it measures, where its results go.

At the end of every validation (Lightning's `check_val_every_n_epoch`) and once more at the end of a run
that stopped elsewhere (the last epoch, `trainer.max_steps`, a time limit: `finish()`), the Evaluator
1. runs the metrics (plain objects from `gdm.metrics`, sharing one feature network, the real-feature cache
   and the DDP sharding of `gdm.evaluation.context`) on the model's capabilities;
2. logs their values and the model's validation losses at the run's step: the number of training batches
   so far (`step`; W&B's x-axis `trainer/global_step` holds it too, as CSV's and TensorBoard's step);
3. saves the grids (`samples/<name>_step<step>.png`, `<name>_last.png`) and logs them at the same step;
4. keeps the final and best values with their protocols, appends the evaluation to `metrics.jsonl`, writes
   `summary.json` (or `eval.json` for task=eval), mirrors best and protocols into the W&B summary;
5. saves `checkpoints/last.ckpt` and, on a new best of `monitor`, `checkpoints/best.ckpt`: after a validation at
   an epoch's end, at on_train_epoch_end (where Lightning's loops count that validation and epoch done, so a
   resume starts the next epoch whatever its `check_val_every_n_epoch`), else at once.
`best` is the best record; `train()` returns its value. Its state (best, run directory, wall time of
earlier sessions) lives in every checkpoint, so a resumed run keeps its best and its total wall time.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from gdm.errors import GdmError
from gdm.evaluation.context import Evaluation, MetricResult, describe, with_id
from gdm.evaluation.real_features import RealFeatureCache
from gdm.images import grid_uint8, save_png
from gdm.loggers import log_images, log_summary
from gdm.models.base import Samples, Translates
from gdm.option_types import Count, checked

EvalBatch = Annotated[Count, Field(description="images per batch of the evaluation")]
Mode = Annotated[Literal["min", "max"], Field(description="whether a lower or a higher monitored value is better")]

log = logging.getLogger(__name__)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # atomic: a kill never leaves half a file


class Evaluator(L.Callback):
    """`metrics`: metric objects (`check(model, data, features)`; `names(model, data, features)`: the values
    it will log; `families`: the values it can log, as `val/<family>` or `val/<family>_...`;
    `__call__(Evaluation) -> MetricResult`). `features`: the feature network the task built
    (`gdm.metrics.features.build_features`; its `name` names the values). `report`: the summary file written
    in `run_dir` (None: none, task=eval writes its own); `save_checkpoints`: last/best checkpoints; `step`:
    the step to report instead of the trainer's (task=eval: the checkpoint's)."""

    @checked
    def __init__(self, metrics: list, features: nn.Module, run_dir: str, monitor: str, mode: Mode = "min",
                 cache_dir: str | None = None, batch_size: EvalBatch = 250, grids_every_n_evals: Count = 1,
                 report: str | None = "summary.json", save_checkpoints: bool = True, step: int | None = None):
        self.metrics, self.features = metrics, features
        self.run_dir = Path(run_dir)
        self.monitor, self.mode = monitor, mode
        self.cache = RealFeatureCache(cache_dir)
        self.batch_size, self.grids_every_n_evals = batch_size, grids_every_n_evals
        self.report, self.save_checkpoints, self.fixed_step = report, save_checkpoints, step
        self.after_fit = False  # in the end-of-run evaluation (`finish`)
        self.save_at_epoch_end: bool | None = None  # an epoch-end validation's checkpoints, best or not, to write
        self.last_batch_of_epoch = False  # the latest training batch ended its epoch
        self.loop_images = 0  # images the current validation / test loop has run on (this process)
        self.best: dict | None = None
        self.final: dict = {}
        self.protocols: dict[str, dict] = {}
        self.test: dict = {}
        self.status = "running"
        self.evaluations = 0
        # gdm's step: training batches so far, counted here and kept in checkpoints. Not Lightning's
        # `global_step`, which counts optimizer steps (2 per GAN batch), nor its batch progress, which a resume
        # from a checkpoint written during validation counts one batch too far.
        self.batches = 0
        self.wall_before, self.session_start = 0.0, time.time()
        self.restored_from: str | None = None
        self.pending: tuple[int, MetricResult] | None = None

    # ---- set-up and the run's lifetime ------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before the first training batch: everything the first evaluation would otherwise find out.
        for metric in self.metrics:
            metric.check(pl_module, trainer.datamodule, self.features.name)
        self.check_monitor(pl_module, trainer.datamodule)

    def check_monitor(self, model: L.LightningModule, data) -> None:
        """`monitor` must be among the values this run will log. The metrics' names are known before they run;
        a model's own validation values (val/d_real, val/elbo) are not, so a monitor in no metric's families
        waits for the first evaluation."""
        names = sorted({n for metric in self.metrics for n in metric.names(model, data, self.features.name)})
        families = [f"val/{family}" for metric in self.metrics for family in metric.families]
        a_metric_value = any(self.monitor == f or self.monitor.startswith(f"{f}_") for f in families)
        if self.monitor in names or not a_metric_value:
            return
        raise GdmError(f"monitor={self.monitor} is not among this run's evaluation values "
                       f"({', '.join(names)}): set monitor= to one of them.")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.session_start = time.time()
        self.status = "running"
        if self.restored_from is not None and Path(self.restored_from) != self.run_dir.resolve():
            # A run started elsewhere from another run's checkpoint (fine-tuning, a sweep) has a best of its own.
            self.best, self.wall_before, self.evaluations = None, 0.0, 0

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A callback that stopped the run early says why (e.g. an Optuna pruner: "pruned").
        reasons = [cb.stop_reason for cb in trainer.callbacks if getattr(cb, "stop_reason", None)]
        if reasons:
            self.status = reasons[0]
        else:
            self.status = "interrupted" if trainer.interrupted else "finished"
        self.write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            self.status = f"interrupted ({type(exception).__name__}): resume with resume=auto"
        else:
            self.status = f"failed: {type(exception).__name__}: {exception}"
        self.write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        num_real = self.loop_images_seen(trainer, pl_module)
        for name in self.test:  # how each was measured, as every evaluation value's protocol says
            self.protocols[name] = with_id({"metric": name.split("/", 1)[1], "split": "test", "num_real": num_real,
                                            **pl_module.test_protocol()})
        self.write(trainer)

    # The images a validation / test loop ran on (limit_val_batches / limit_test_batches may stop it early), for
    # the protocol of the values the model's own steps logged.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loop_images = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loop_images = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
                                ) -> None:
        self.loop_images += batch_length(batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.loop_images += batch_length(batch)

    def loop_images_seen(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """The images of the last validation / test loop, summed over processes (a distributed sampler's padding
        included: the images the logged mean is over). A collective: every rank calls it."""
        count = torch.tensor(float(self.loop_images), device=pl_module.device)
        return int(trainer.strategy.reduce(count, reduce_op="sum"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.batches += 1
        self.last_batch_of_epoch = batch_idx + 1 >= trainer.num_training_batches

    def state_dict(self) -> dict:
        return {"best": self.best, "run_dir": str(self.run_dir.resolve()), "wall_seconds": self.wall_seconds(),
                "evaluations": self.evaluations, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if self.status != "running":
            # trainer.test(ckpt_path=best) after the fit restores callbacks too: the best checkpoint's wall time,
            # step and evaluation count are the past of this run, not a session to add to it.
            return
        self.best, self.restored_from = state.get("best"), state.get("run_dir")
        self.wall_before, self.evaluations = state.get("wall_seconds", 0.0), state.get("evaluations", 0)
        self.batches = state.get("batches", 0)

    def wall_seconds(self) -> float:
        return round(self.wall_before + time.time() - self.session_start, 2)

    def finish(self, trainer: L.Trainer, model: L.LightningModule, datamodule) -> None:
        """The end-of-run evaluation: a run that stopped between evaluations (the last epoch not divisible by
        check_val_every_n_epoch, trainer.max_steps, a time limit) is evaluated once more, so its final
        metrics, grids and checkpoints describe the final model."""
        if trainer.interrupted or trainer.fast_dev_run or not trainer.limit_val_batches or self.status != "finished":
            return
        if self.final.get("step") != self.batches:
            self.after_fit = True  # the fit loop has counted the last epoch done: it is current_epoch - 1
            try:
                trainer.validate(model, datamodule=datamodule, verbose=False)
            finally:
                self.after_fit = False

    # ---- one evaluation ---------------------------------------------------------------------------

    def step(self, trainer: L.Trainer) -> int:
        return self.fixed_step if self.fixed_step is not None else self.batches

    def evaluation(self, trainer: L.Trainer, model: L.LightningModule) -> Evaluation:
        strategy = trainer.strategy
        return Evaluation(
            model=model, data=trainer.datamodule, features=self.features.to(model.device), cache=self.cache,
            device=model.device, rank=trainer.global_rank, world_size=trainer.world_size,
            all_gather=strategy.all_gather, all_agree=lambda ok: strategy.reduce_boolean_decision(ok, all=True),
            batch_size=self.batch_size, num_workers=getattr(trainer.datamodule, "num_workers", 0))

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        ev = self.evaluation(trainer, pl_module)
        if isinstance(pl_module, Samples):  # e.g. the AE refits its latent Gaussian to the training codes
            pl_module.prepare_sampling(DataLoader(ev.split("train"), batch_size=256, generator=torch.Generator()))
        result = MetricResult()
        for metric in self.metrics:
            result.update(metric(ev))
        step = self.step(trainer)
        # "step" sets the x of this evaluation in every logger (Lightning pops it from the metrics).
        # The values are already global (every rank computed the same); "synced" by max, which leaves them exact,
        # only so that Lightning does not warn once per key under DDP.
        pl_module.log_dict({**result.values, "step": float(step)}, on_epoch=True, sync_dist=True, reduce_fx="max")
        if trainer.is_global_zero and self.evaluations % self.grids_every_n_evals == 0:
            self.save_grids(trainer, pl_module, ev, result, step)
        self.pending = (step, result)

    def save_grids(self, trainer, model, ev: Evaluation, result: MetricResult, step: int) -> None:
        grids = {**model.visuals(self.examples(model, ev)), **result.grids}
        pictures = {name: grid_uint8(images, nrow=nrow) for name, (images, nrow) in grids.items()}
        for name, picture in pictures.items():
            save_png(picture, self.run_dir / "samples" / f"{name}_step{step:07d}.png")
            save_png(picture, self.run_dir / "samples" / f"{name}_last.png")
        log_images(trainer.loggers, pictures, step)

    @staticmethod
    def examples(model, ev: Evaluation, n: int = 32) -> dict[str, torch.Tensor]:
        """The first real images a model's grids show: a translator's test images per domain, else validation."""
        if isinstance(model, Translates):
            names = {d: f"{d}/test" for pair in model.directions.values() for d in pair}  # pix2pix: ground truth
        else:
            names = {"val": "val"}
        found = {}
        for key, split in names.items():
            dataset = ev.split(split)
            if len(dataset):
                found[key] = torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))])
        return found

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pending is None:
            return
        step, result = self.pending
        self.pending = None
        self.evaluations += 1
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        values.update(result.values)
        num_real = self.loop_images_seen(trainer, pl_module)
        protocols = {name: result.protocols.get(name) or self.validation_protocol(name, trainer, num_real)
                     for name in values}
        epoch = trainer.current_epoch - 1 if self.after_fit else trainer.current_epoch
        record = {"step": step, "epoch": epoch, "global_step": trainer.global_step,
                  "images_seen": step * trainer.world_size * getattr(trainer.datamodule, "batch_size", 0),
                  "wall_seconds": self.wall_seconds()}
        self.final = {**values, **record}
        self.protocols = protocols
        if self.monitor not in values and self.save_checkpoints and not trainer.fast_dev_run:
            self.save(trainer, best=False)  # the training so far is kept before update_best stops the run
        improved = self.update_best(values, protocols, record)
        if trainer.is_global_zero and self.report is not None:
            with (self.run_dir / "metrics.jsonl").open("a") as f:  # the run's history, one line per evaluation
                f.write(json.dumps({**record, "metrics": values,
                                    "protocols": {k: p["id"] for k, p in protocols.items()}}) + "\n")
        self.write(trainer)
        if self.save_checkpoints and not trainer.fast_dev_run:
            # After an epoch's last batch: written at on_train_epoch_end, where Lightning counts this
            # validation and the epoch done.
            if trainer.state.fn == TrainerFn.FITTING and self.last_batch_of_epoch:
                self.save_at_epoch_end = improved
            else:
                self.save(trainer, improved)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_at_epoch_end is not None:
            improved, self.save_at_epoch_end = self.save_at_epoch_end, None
            self.save(trainer, improved)

    def save(self, trainer: L.Trainer, best: bool) -> None:
        checkpoints = self.run_dir / "checkpoints"
        trainer.save_checkpoint(checkpoints / "last.ckpt", weights_only=False)
        if best:
            trainer.save_checkpoint(checkpoints / "best.ckpt", weights_only=False)

    def validation_protocol(self, name: str, trainer: L.Trainer, num_real: int) -> dict:
        """The protocol of a value the model's validation_step logged: its mean over the `num_real` validation
        images the loop ran on, named by the model that defines it (EDM's, the flow's and DDPM's val/loss are three
        different quantities)."""
        model = trainer.lightning_module
        defined_by = type(model).__name__ + getattr(model, "formulation_words", lambda: "")()
        return with_id({"metric": name.split("/", 1)[1], "kind": "mean over the validation batches",
                        "defined_by": defined_by, "split": "val", "num_real": num_real})

    def update_best(self, values: dict, protocols: dict, record: dict) -> bool:
        if self.monitor not in values:
            raise GdmError(f"monitor={self.monitor} is not among this run's evaluation values "
                           f"({', '.join(sorted(values))}): set monitor= to one of them.")
        value, protocol = values[self.monitor], protocols[self.monitor]["id"]
        best = self.best
        if best is not None and best.get("protocol") != protocol:
            log.warning(f"{self.monitor} is now measured with protocol {protocol}, the best so far with "
                        f"{best.get('protocol')}: they are not comparable; the best restarts from this evaluation.")
            best = None
        better = best is None or math.isnan(best["value"]) or (
            value < best["value"] if self.mode == "min" else value > best["value"])
        if better and not math.isnan(value):
            self.best = {"metric": self.monitor, "value": value, **record, "protocol": protocol,
                         "checkpoint": "checkpoints/best.ckpt" if self.save_checkpoints else None}
            return True
        if best is None:
            self.best = None
        return False

    # ---- reports ----------------------------------------------------------------------------------

    def summary(self) -> dict:
        return {"status": self.status, "monitor": self.monitor, "mode": self.mode,
                "step_unit": "training batches", "best": self.best, "final": self.final,
                "protocols": self.protocols, "test": self.test, "evaluations": self.evaluations,
                "wall_seconds": self.wall_seconds(), **{k: self.final[k] for k in ("step", "global_step", "epoch")
                                                        if k in self.final}}

    def write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or self.report is None:  # DDP: rank 0 writes the run's files
            return
        summary = self.summary()
        write_json(self.run_dir / self.report, summary)
        flat = {"status": self.status, **{f"protocol/{name}": p for name, p in self.protocols.items()}}
        if self.best:
            flat.update({f"best/{self.monitor}": self.best["value"], f"best/{self.monitor}_step": self.best["step"]})
        log_summary(trainer.loggers, flat)

    def describe(self) -> str:
        """The final values, each beside its protocol."""
        width = max(map(len, self.final), default=0)
        lines = []
        for name, value in sorted(self.final.items()):
            if name in self.protocols:
                lines.append(f"  {name:<{width}}  {value:<12.6g}  {describe(self.protocols[name])}")
        return "\n".join(lines)


def batch_length(batch) -> int:
    """The number of examples in a batch: the length of its first tensor (a dict of tensors, or a tensor)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    return next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
