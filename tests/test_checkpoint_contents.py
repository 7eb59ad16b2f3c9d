"""What a gdm checkpoint holds beside Lightning's entries is assembled by one callback."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from lightning.pytorch.trainer.states import TrainerFn

from gdm.callbacks.checkpoint_contents import CheckpointContents


def fitting_trainer(loggers: tuple = ()) -> SimpleNamespace:
    return SimpleNamespace(loggers=list(loggers), state=SimpleNamespace(fn=TrainerFn.FITTING), training=True,
                           world_size=1, global_step=6)


def test_one_callback_writes_every_gdm_entry():
    contents = CheckpointContents(seed=3, config={"seed": 3, "root": "/data"},
                                  source={"root": "${paths.data}"}, step=lambda: 5)
    trainer, checkpoint = fitting_trainer(), {}
    contents.on_save_checkpoint(trainer, None, checkpoint)
    assert set(checkpoint) == {"gdm_config", "gdm_config_source", "gdm_step", "gdm_rng_state"}
    assert checkpoint["gdm_config"] == {"seed": 3, "root": "/data"}
    assert checkpoint["gdm_config_source"] == {"root": "${paths.data}"}
    assert checkpoint["gdm_step"] == 5
    rng = checkpoint["gdm_rng_state"]
    assert torch.equal(rng["state"]["torch"], torch.get_rng_state())
    assert (rng["world_size"], rng["global_step"], rng["epoch_end"]) == (1, 6, False)


def test_a_checkpoint_written_at_an_epoch_end_says_so_until_the_next_batch():
    contents, trainer = CheckpointContents(seed=0), fitting_trainer()

    def epoch_end() -> bool:
        checkpoint = {}
        contents.on_save_checkpoint(trainer, None, checkpoint)
        return checkpoint["gdm_rng_state"]["epoch_end"]

    contents.on_train_epoch_end(trainer, None)
    assert epoch_end()
    contents.on_train_batch_start(trainer, None, {}, 0)
    assert not epoch_end()


def test_the_wandb_run_id_travels_with_the_checkpoint(monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger.__new__(WandbLogger)  # no W&B run: only its id is read
    monkeypatch.setattr(WandbLogger, "version", property(lambda self: "abc123"))
    checkpoint = {}
    CheckpointContents(seed=0).on_save_checkpoint(fitting_trainer(loggers=[logger]), None, checkpoint)
    assert checkpoint["wandb_run_id"] == "abc123"
