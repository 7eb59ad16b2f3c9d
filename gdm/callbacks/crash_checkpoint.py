"""`checkpoints/on_exception.ckpt` when training stops on an exception (a crash, Ctrl-C, SIGTERM), so no
work is lost; `resume=auto` resumes from it when it is the newest checkpoint of the run directory.

Only while training is under way: an error while the run is still being set up (data, metrics, restoring a
checkpoint) would otherwise save the untrained model over the progress of a preempted run, and one in the
evaluation after fit would save the weights `test` loaded. Not after a user mistake (one-sentence errors)
or a divergence either: the weights that produced a NaN loss are no place to resume from, and the last
good checkpoint (last.ckpt) must stay the newest. Under DDP only on SIGTERM, which every rank sees at the
same batch: saving is collective, and one rank's crash would leave it waiting on the others.

A plain callback on purpose: with Lightning's OnExceptionCheckpoint in the trainer, `fit(ckpt_path=None)`
silently resumes from any checkpoint already in the folder; gdm resumes only when asked (resume=auto).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gdm.errors import GdmError


class CrashCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "on_exception"):
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.training = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = True  # after setup and after any checkpoint was restored

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not self.training or isinstance(exception, GdmError) or trainer.fast_dev_run:
            return
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(str(self.path))
