"""The progress a run shows: Rich's bar on a terminal, one log line per training epoch when the output goes to a
file or a pipe (where the bar draws nothing, so a piped run showed no progress at all)."""

from __future__ import annotations

import logging
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger("gdm")


def progress_bar(refresh_rate: int = 5) -> ProgressBar:
    """Rich's bar (redrawn every `refresh_rate` batches) when stdout is a terminal, else `EpochLines`."""
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return EpochLines()


class EpochLines(ProgressBar):
    """One line per training epoch on the first process: `epoch 3/70: 22 batches in 4.1 s, g_loss 1.23 ...`."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.epoch_start = time.time()
        self.batches = 0

    @property
    def is_enabled(self) -> bool:  # LightningModule.print writes through an enabled bar
        return self.enabled

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start, self.batches = time.time(), 0

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.global_rank != 0:
            return
        values = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info(f"epoch {trainer.current_epoch + 1}{total}: {self.batches} batches in "
                 f"{time.time() - self.epoch_start:.1f} s{', ' + shown if shown else ''}")
