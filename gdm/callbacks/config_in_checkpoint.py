"""Store the run's composed config in every checkpoint, so a checkpoint alone rebuilds its model."""

from __future__ import annotations

import lightning as L


class ConfigInCheckpoint(L.Callback):
    def __init__(self, config: dict | None = None):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["gdm_config"] = self.config
