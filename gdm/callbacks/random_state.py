"""The global random streams (torch, CUDA, numpy, Python) of a training run: saved in every checkpoint,
restored on resume, and different on each DDP rank.

- Resume: Lightning checkpoints hold no RNG state, so a resumed run would draw other noise, shuffles,
  crops and image-pool picks than the uninterrupted run. Saved here and restored when training starts
  (not when the checkpoint loads: Lightning draws in between), a single-process resume continues the
  exact same streams (tested bit for bit).
- DDP: every rank seeds with the same `seed`, so with in-process data loading (num_workers=0) each rank
  would draw the same shuffles, augmentations and GAN noise. At fit start each rank > 0 moves to its own
  stream, derived from (seed, rank); a resumed multi-process run derives it from (seed, rank, step), since
  a checkpoint holds rank 0's state only. (DataLoader workers are already seeded by rank by Lightning.)
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

KEY = "gdm_rng_state"


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


class RandomState(L.Callback):
    def __init__(self, seed: int):
        self.seed = seed
        self.pending: dict | None = None  # the streams of the checkpoint being resumed, until training starts

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1 and trainer.global_rank > 0:
            seed_rank(self.seed, trainer.global_rank)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[KEY] = {"state": collect(), "world_size": trainer.world_size, "global_step": trainer.global_step}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Kept, and applied at on_train_start: what runs between the checkpoint's loading and training's start
        # must not move the restored streams (see `on_train_start`).
        self.pending = checkpoint.get(KEY)  # None: a checkpoint from before RNG states were saved

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not at load time: between the load and here Lightning draws from the global torch stream where the
        # uninterrupted run does not. Resuming from a checkpoint saved in an epoch's last validation (where
        # last.ckpt is written), the fit loop re-enters that finished epoch and builds a train DataLoader
        # iterator for it, which draws its base seed (torch.empty(()).random_()); the uninterrupted run
        # builds the next epoch's iterator only. That one extra draw shifted every later shuffle, noise and
        # dropout mask of a resumed run. on_train_start comes after that iterator, the sanity check and the
        # set-up, and before any training-time draw.
        saved, self.pending = self.pending, None
        if saved is None:
            return
        if trainer.world_size == 1 and saved["world_size"] == 1:
            restore(saved["state"])
        else:
            seed_rank(self.seed, trainer.global_rank, saved["global_step"])
