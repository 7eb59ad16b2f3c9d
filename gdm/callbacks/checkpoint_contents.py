"""What a gdm checkpoint holds beside Lightning's own entries (weights, optimizers, loops, callback states),
assembled here and nowhere else:

- `gdm_config`: the run's resolved config (a checkpoint alone rebuilds its model anywhere, `gdm.checkpoints`);
  `gdm_config_source`: the same before interpolation, so a task on the checkpoint re-resolves it with this
  machine's paths and overrides;
- `gdm_step`: gdm's step, the training batches completed (task=eval reports it);
- `wandb_run_id`: the W&B run, so a resumed run continues it instead of starting a new one (`gdm.resume`);
- `gdm_rng_state`: the global random streams (torch, CUDA, numpy, Python) of the run, restored on resume,
  and different on each DDP rank:
  - Resume: Lightning checkpoints hold no RNG state, so a resumed run would draw other noise, shuffles,
    crops and image-pool picks than the uninterrupted run. Saved here and restored when training starts
    (not when the checkpoint loads: Lightning draws in between; for a checkpoint from an epoch's end, before
    the fit loop builds the next epoch's DataLoader iterator), a single-process resume continues the exact
    same streams (tested bit for bit).
  - After fit: the end-of-run evaluation (`trainer.validate`) draws from the streams before it writes
    last.ckpt; that checkpoint holds the streams as training left them, so continuing it equals a longer
    uninterrupted run.
  - DDP: every rank seeds with the same `seed`, so with in-process data loading (num_workers=0) each rank
    would draw the same shuffles, augmentations and GAN noise. At fit start each rank > 0 moves to its own
    stream, derived from (seed, rank); a resumed multi-process run derives it from (seed, rank, step), since
    a checkpoint holds rank 0's state only. (DataLoader workers are already seeded by rank by Lightning.)

It must come before the Evaluator among the callbacks: it marks an epoch's end before the Evaluator saves
the checkpoints of that epoch's validation there.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from gdm.loggers import wandb_run_id

CONFIG, CONFIG_SOURCE, STEP, WANDB_RUN_ID, RNG_STATE = (
    "gdm_config", "gdm_config_source", "gdm_step", "wandb_run_id", "gdm_rng_state")


def collect() -> dict:
    """The global RNG states, as plain tensors, lists and tuples (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def restore(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_rank(seed: int, rank: int, step: int = 0) -> None:
    """Seed every global stream from (seed, rank, step): distinct streams for distinct ranks."""
    value = int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # CUDA generators too


class CheckpointContents(L.Callback):
    """`seed`: the run's seed (the DDP ranks' streams derive from it); `config` / `source`: the resolved and
    the uninterpolated config; `step`: returns gdm's step (the Evaluator counts the training batches)."""

    def __init__(self, seed: int, config: dict | None = None, source: dict | None = None,
                 step: Callable[[], int] | None = None):
        self.seed, self.config, self.source, self.step = seed, config, source, step
        self.epoch_end = False  # inside on_train_epoch_end, where Lightning counts the epoch done
        self.pending: dict | None = None  # the streams of the checkpoint being resumed, until training starts
        self.end_of_training: dict | None = None  # the streams where the last fit stopped training

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1 and trainer.global_rank > 0:
            seed_rank(self.seed, trainer.global_rank)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_end = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        self.epoch_end = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_end = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end_of_training = collect()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint[CONFIG] = self.config
        if self.source is not None:
            checkpoint[CONFIG_SOURCE] = self.source
        if self.step is not None:
            checkpoint[STEP] = self.step()
        run_id = wandb_run_id(trainer.loggers)
        if run_id:
            checkpoint[WANDB_RUN_ID] = run_id
        # A checkpoint written after fit (the end-of-run evaluation, in trainer.validate) holds the streams where
        # training stopped: the evaluation draws from them (its DataLoader's base seed, noise), where a longer
        # uninterrupted run, with no evaluation scheduled there, goes on training.
        after_fit = trainer.state.fn != TrainerFn.FITTING and self.end_of_training is not None
        epoch_end = after_fit or (trainer.training and self.epoch_end)
        state = self.end_of_training if after_fit else collect()
        checkpoint[RNG_STATE] = {"state": state, "world_size": trainer.world_size,
                                 "global_step": trainer.global_step, "epoch_end": epoch_end}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Kept, and applied at on_train_start: what runs between the checkpoint's loading and training's start
        # must not move the restored streams (see `on_train_start`).
        self.pending = checkpoint.get(RNG_STATE)  # None: a checkpoint from before RNG states were saved

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A checkpoint written at an epoch's end (on_train_epoch_end, or after fit): the fit loop's set-up builds
        # the next epoch's DataLoader iterator (its base seed and shuffle are drawn) before on_train_start, and
        # trains with it, so the streams go back before that set-up, where the uninterrupted run draws them.
        if self.pending is not None and self.pending.get("epoch_end"):
            self.on_train_start(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not at load time: between the load and here Lightning draws from the global torch stream where the
        # uninterrupted run does not. Resuming from a checkpoint saved in a validation inside an epoch, the fit loop
        # builds a train DataLoader iterator (its base seed: torch.empty(()).random_()) before it skips to the saved
        # batch, where the uninterrupted run builds none; on_train_start comes after that iterator and the set-up,
        # and before any training-time draw. (A checkpoint from an epoch's end is restored earlier: on_fit_start.)
        saved, self.pending, self.end_of_training = self.pending, None, None
        if saved is None:
            return
        if trainer.world_size == 1 and saved["world_size"] == 1:
            restore(saved["state"])
        else:
            seed_rank(self.seed, trainer.global_rank, saved["global_step"])
