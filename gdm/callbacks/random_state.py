"""The global random streams (torch, CUDA, numpy, Python) of a training run: saved in every checkpoint,
restored on resume, and different on each DDP rank.

- Resume: Lightning checkpoints hold no RNG state, so a resumed run would draw other noise, shuffles,
  crops and image-pool picks than the uninterrupted run. Saved here, a single-process resume continues
  the exact same streams (tested bit for bit).
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

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1 and trainer.global_rank > 0:
            seed_rank(self.seed, trainer.global_rank)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[KEY] = {"state": collect(), "world_size": trainer.world_size, "global_step": trainer.global_step}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get(KEY)
        if saved is None:  # a checkpoint from before RNG states were saved: resume with the current streams
            return
        if trainer.world_size == 1 and saved["world_size"] == 1:
            restore(saved["state"])
        else:
            seed_rank(self.seed, trainer.global_rank, saved["global_step"])
