"""Store the run's composed config in every checkpoint, so a checkpoint alone rebuilds its model, and the
W&B run id, so a resumed run continues the same W&B run instead of starting a new one."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import WandbLogger


class ConfigInCheckpoint(L.Callback):
    """`gdm_config`: the resolved config (rebuilds the model anywhere); `gdm_config_source`: the same before
    interpolation, so a task on the checkpoint re-resolves it with this machine's paths and overrides."""

    def __init__(self, config: dict | None = None, source: dict | None = None):
        self.config, self.source = config, source

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["gdm_config"] = self.config
        if self.source is not None:
            checkpoint["gdm_config_source"] = self.source
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint["wandb_run_id"] = logger.version
