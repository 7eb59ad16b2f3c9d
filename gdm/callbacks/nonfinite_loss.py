"""What a NaN or Inf training loss does: `stop` the run (default) or `skip` that update.

Models call `GenerativeModule.loss_ok(name, loss)` before each backward pass; this callback sets the
policy they follow. `stop` raises one line naming the loss, its value and the step; the run's
last.ckpt (the last evaluation's, before the divergence) stays as it was and no crash checkpoint is
written over it. `stop` costs no device sync per update: the losses stay on the device and are read back
every `check_every_n_steps` batches and before each evaluation or checkpoint, so the run stops at most
that many batches after the bad one. `skip` leaves the weights and optimizer state untouched for that
update and warns; it must decide before the step, so it reads every loss back (one device sync per
update, and under DDP one collective); `max_consecutive_skips` skipped updates in a row stop the run as
well (the weights are likely broken).
"""

from __future__ import annotations

from typing import Annotated, Literal

import lightning as L
from pydantic import Field

from gdm.errors import GdmError
from gdm.option_types import Count, checked


class Diverged(GdmError):
    """A non-finite training loss stopped the run."""


class NonFiniteLoss(L.Callback):
    @checked
    def __init__(self, action: Annotated[Literal["stop", "skip"], Field(
                     description="what a NaN / Inf loss does: stop the run, or skip that update")] = "stop",
                 max_consecutive_skips: Annotated[Count, Field(
                     description="skipped updates in a row that stop the run")] = 20,
                 check_every_n_steps: Annotated[Count, Field(
                     description="batches between read-backs of the losses")] = 10):
        self.action, self.max_consecutive_skips = action, max_consecutive_skips
        self.check_every_n_steps = check_every_n_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.nonfinite_action = self.action
        pl_module.max_consecutive_skips = self.max_consecutive_skips
        pl_module.nonfinite_check_every = self.check_every_n_steps
