"""Save the model's `visuals()` as PNG grids in the run directory and log them to image-capable loggers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from gdm.images import grid_uint8, save_png


class ImageGrids(L.Callback):
    """At the end of every `every_n_evals`-th validation: `<dirpath>/<name>_step<global_step>.png`
    and `<name>_last.png`, plus a uint8 image in W&B / TensorBoard."""

    def __init__(self, dirpath: str, every_n_evals: int = 1):
        self.dirpath = Path(dirpath)
        self.every_n_evals = every_n_evals
        self.evals = 0

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.evals += 1
        if (self.evals - 1) % self.every_n_evals:
            return
        step = trainer.global_step
        for name, (images, nrow) in pl_module.visuals().items():
            grid = grid_uint8(images, nrow=nrow)
            save_png(grid, self.dirpath / f"{name}_step{step:07d}.png")
            save_png(grid, self.dirpath / f"{name}_last.png")
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"images/{name}", images=[grid.permute(1, 2, 0).numpy()], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"images/{name}", grid, global_step=step)
