"""The divergence guard of training updates: what a NaN or Inf loss does, without a host sync per update.

Models call `loss_ok(name, loss)` before each backward pass. With the NonFiniteLoss callback's action=stop
(default) the loss stays on its device and is read back every `nonfinite_check_every` batches and
before each evaluation or checkpoint, so a checkpoint never holds weights trained on a non-finite loss;
action=skip decides at once (one sync per update), the price of leaving that update out.
"""

from __future__ import annotations

from pathlib import Path

import torch


class NonFiniteGuard:
    """Mixin of `GenerativeModule` (a LightningModule); works in a plain loop without a Trainer too."""

    # Set by the NonFiniteLoss callback (callbacks.nonfinite_loss): what a NaN / Inf loss does, and how many
    # batches may pass before the recorded losses are read back (action=stop).
    nonfinite_action: str = "stop"
    max_consecutive_skips: int = 20
    nonfinite_check_every: int = 10
    # Losses recorded without a trainer (a plain loop) are read back after this many, so they cannot pile up.
    max_pending_losses: int = 256

    def loss_ok(self, name: str, loss: torch.Tensor) -> bool:
        """Whether to take the update for `loss`; False: skip it. Call before its backward pass.

        action=stop (default): no device sync here. The loss is kept (on its device) and `check_losses` reads
        the kept ones back every `nonfinite_check_every` batches and before each evaluation or checkpoint;
        a non-finite one stops the run there with one line: the loss, its value, the step it happened at.
        The few updates in between are taken, but no checkpoint holds their weights.
        action=skip decides now, before the step: one device sync (and under DDP one collective) per call,
        the price of leaving that update out."""
        if self.nonfinite_action == "skip":
            return self._skip_decision(name, loss)
        pending = self.__dict__.setdefault("_pending_losses", [])
        pending.append((name, loss.detach(), self._where()))
        if self._trainer is None and len(pending) >= self.max_pending_losses:
            self.check_losses()
        return True

    def _where(self) -> tuple[int, int, int] | None:
        """(step, epoch, batch) of the update under way; None in a loop without a trainer."""
        trainer = self._trainer
        if trainer is None:
            return None
        return trainer.global_step, trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx

    @staticmethod
    def _describe(name: str, value: object, where: tuple[int, int, int] | None) -> str:
        at = f" at step {where[0]} (epoch {where[1]}, batch {where[2]})" if where is not None else ""
        return f"train/{name} is {value}{at}"

    def check_losses(self) -> None:
        """Read back the losses `loss_ok` kept since the last check and stop on the first non-finite one."""
        pending = self.__dict__.get("_pending_losses")
        if not pending:
            return  # every DDP rank runs the same updates: all return here, or none
        self._pending_losses = []
        # note: a CPU-GPU sync point, once per check
        values = torch.stack([loss.float().reshape(-1).mean() for _, loss, _ in pending]).cpu()
        finite = torch.isfinite(values)
        local_ok = bool(finite.all())
        # DDP: every rank takes the same decision, or the ranks that carry on would wait on the others.
        all_ok = local_ok if self._trainer is None else self.trainer.strategy.reduce_boolean_decision(local_ok, all=True)
        if all_ok:
            return
        if local_ok:
            where = f"a training loss was not finite on another DDP rank between steps {pending[0][2][0]} and " \
                    f"{pending[-1][2][0]}"
        else:
            first = int((~finite).nonzero()[0])
            name, _, at = pending[first]
            where = self._describe(name, float(values[first]), at)
        self._stop(where, "")

    def _skip_decision(self, name: str, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss).all())  # note: a CPU-GPU sync point, per update
        if not hasattr(self, "_skipped_in_a_row"):
            self._skipped_in_a_row: dict[str, int] = {}  # per loss: a GAN's D and G updates alternate
        skipped = self._skipped_in_a_row
        # DDP: every rank takes the same decision, or their gradient all-reduces would wait on each other.
        attached = self._trainer is not None
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True) if attached else finite:
            skipped[name] = 0
            return True
        value = "finite here but not on another DDP rank" if finite else loss.detach().float().mean().item()
        where = self._describe(name, value, self._where())
        skipped[name] = skipped.get(name, 0) + 1
        if skipped[name] <= self.max_consecutive_skips:
            (self.print if attached else print)(f"{where}: update skipped (NonFiniteLoss action=skip)")
            return False
        self._stop(where, f" ({skipped[name]} in a row)")

    def _stop(self, where: str, repeat: str) -> None:
        from gdm.callbacks.nonfinite_loss import Diverged

        keep = "no checkpoint was written yet"
        if self._trainer is not None:
            last = Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"  # where the Evaluator saves it
            keep = f"the last good checkpoint is {last}" if last.is_file() else keep
        other = "" if self.nonfinite_action == "skip" else \
            ", or set the NonFiniteLoss callback's action=skip to skip such updates"
        raise Diverged(f"{where}{repeat}: training stopped; {keep}. Lower the learning rates (in a new run: a "
                       f"resumed one keeps the saved optimizer settings){other}.")

    # The kept losses are read back every `nonfinite_check_every` batches and before anything is evaluated or
    # saved, so a checkpoint never holds weights trained on a non-finite loss.
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.nonfinite_check_every == 0:
            self.check_losses()

    def on_validation_start(self) -> None:
        self.check_losses()

    def on_train_end(self) -> None:
        self.check_losses()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_losses()
