"""What a NaN or Inf training loss does: `stop` the run (default) or `skip` that update.

Models call `GenerativeModule.loss_ok(name, loss)` before each backward pass; this callback sets the
policy they follow. `stop` raises one line naming the loss, its value and the step; the run's
last.ckpt (the last evaluation's, before the divergence) stays as it was and no crash checkpoint is
written over it. `skip` leaves the weights and optimizer state untouched for that update and warns;
`max_consecutive_skips` skipped updates in a row stop the run as well (the weights are likely broken).
"""

from __future__ import annotations

import lightning as L

from gdm.errors import GdmError

ACTIONS = ("stop", "skip")


class Diverged(GdmError):
    """A non-finite training loss stopped the run."""


class NonFiniteLoss(L.Callback):
    def __init__(self, action: str = "stop", max_consecutive_skips: int = 20):
        if action not in ACTIONS:
            raise GdmError(f"callbacks.nonfinite_loss.action='{action}' is not one of {', '.join(ACTIONS)}.")
        self.action, self.max_consecutive_skips = action, max_consecutive_skips

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.nonfinite_action = self.action
        pl_module.max_consecutive_skips = self.max_consecutive_skips
