"""`checkpoints/on_exception.ckpt` when training stops on an exception (a crash, Ctrl-C, SIGTERM), so no
work is lost; `resume=auto` resumes from it when it is the newest checkpoint of the run directory.

Only once training is under way: an error while the run is still being set up (data, metrics, restoring a
checkpoint) would otherwise save the untrained model over the progress of a preempted run. Not after a
user mistake (one-sentence errors) or a divergence either: the weights that produced a NaN loss are no
place to resume from, and the last good checkpoint (last.ckpt) must stay the newest.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint

from gdm.errors import GdmError


class CrashCheckpoint(OnExceptionCheckpoint):
    training = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = True  # after setup and after any checkpoint was restored

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.training and not isinstance(exception, GdmError):
            super().on_exception(trainer, pl_module, exception)
