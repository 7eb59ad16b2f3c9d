"""Always evaluate at the end of the last epoch, so the run's final metrics describe the final model
even when `trainer.check_val_every_n_epoch` does not divide `trainer.max_epochs`."""

from __future__ import annotations

import lightning as L


class ValidateLastEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if last_epoch and trainer.check_val_every_n_epoch is not None:
            # Lightning reads this attribute at every epoch end to decide whether to validate.
            trainer.check_val_every_n_epoch = 1
