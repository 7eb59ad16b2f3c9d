"""A test callback that sends this process a signal once training reaches a given step, as a cluster
scheduler or `kill` would, at a step the test knows."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    def __init__(self, signal_name: str, step: int):
        self.signum = getattr(signal, signal_name)
        self.step = step
        self.sent = False

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)
