"""`summary.json` in the run directory: final and best metrics, steps, wall time, status.

Rewritten after every validation, so a crashed or killed run still leaves its numbers, and
mirrored into the W&B run summary (`best/<metric>`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException


def _number(value) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class RunSummary(L.Callback):
    def __init__(self, path: str, monitor: str, mode: str = "min"):
        self.path = Path(path)
        self.monitor, self.mode = monitor, mode
        self.summary: dict = {}
        self.start = time.time()

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.start = time.time()
        self.summary = {"status": "running", "monitor": self.monitor, "mode": self.mode, "best": None, "final": {}}
        if trainer.ckpt_path and self.path.is_file():
            # Resuming this run directory: its best so far still counts (and best.ckpt holds it). A run started
            # elsewhere from another run's checkpoint (fine-tuning, a sweep) has a best of its own.
            previous = json.loads(self.path.read_text())
            if previous.get("monitor") == self.monitor and previous.get("best"):
                self.summary["best"] = previous["best"]

    def _better(self, value: float) -> bool:
        best = self.summary.get("best")
        if best is None or math.isnan(best["value"]):
            return True
        return value < best["value"] if self.mode == "min" else value > best["value"]

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.summary:  # (also called by trainer.validate after fit)
            return
        val = {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.summary["final"] = {**val, "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        if self.monitor in val and self._better(val[self.monitor]):
            self.summary["best"] = {"metric": self.monitor, "value": val[self.monitor],
                                    "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.summary:
            self.summary["test"] = {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.summary:
            # a callback that stopped the run says why (e.g. OptunaPruning: "pruned")
            reasons = [c.stop_reason for c in trainer.callbacks if getattr(c, "stop_reason", None)]
            status = "interrupted" if trainer.interrupted else "finished"
            self.summary["status"] = reasons[0] if reasons else status
            self._write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        if self.summary:
            if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
                self.summary["status"] = f"interrupted ({type(exception).__name__}): resume with resume=auto"
            else:
                self.summary["status"] = f"failed: {type(exception).__name__}: {exception}"
            self._write(trainer)

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        loop = trainer.fit_loop.epoch_loop
        self.summary.update(
            global_step=trainer.global_step,  # optimizer steps, as Lightning counts them
            batches=loop.batch_progress.total.completed,
            epochs=trainer.current_epoch,
            wall_seconds=round(time.time() - self.start, 2),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary, indent=2))
        tmp.replace(self.path)  # atomic: a kill never leaves half a file
        best = self.summary.get("best")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary["status"] = self.summary["status"]
            if isinstance(logger, WandbLogger) and best is not None:
                logger.experiment.summary[f"best/{best['metric']}"] = best["value"]
                logger.experiment.summary[f"best/{best['metric']}_step"] = best["global_step"]
