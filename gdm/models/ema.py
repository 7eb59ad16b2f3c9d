"""An exponential moving average of a net's weights (Karras et al. 2018, "Progressive Growing of GANs"; Yazici et
al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"): the copy samples and metrics use."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA(AveragedModel):
    """`decay` in [0, 1): after each update, average = decay * average + (1 - decay) * net, over the net's
    parameters and buffers (batch norm's running statistics too). The first update copies the net.

    Its state dict (`module.*`, `n_averaged`) lives in the model's, so checkpoints keep it and a resumed run
    continues the same average. `update` is `update_parameters` without its two host reads of the update count
    per call (syncs on a GPU): once the count is known to be past 0, every step runs on the device.
    """

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.requires_grad_(False)
        self._started = False  # whether this process has updated it (the count may come from a checkpoint)

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float | None = None) -> None:
        """One EMA step towards `net`'s current weights and buffers; `decay` for this step instead of the
        constructor's (a schedule, as EDM's half-life with ramp-up). The first step of a new average copies the
        net; the first step after a resume (the count > 0, from the checkpoint) averages as every other."""
        if not self._started:
            self._started = True
            if int(self.n_averaged) == 0:  # one host read per process
                self.update_parameters(net)
                return
        pairs = zip([*self.module.parameters(), *self.module.buffers()], [*net.parameters(), *net.buffers()],
                    strict=True)
        if decay is not None:
            for averaged, current in pairs:
                if averaged.is_floating_point():
                    averaged.lerp_(current.detach(), 1 - decay)
                else:
                    averaged.copy_(current)
        else:
            by_dtype: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
            for averaged, current in pairs:  # the EMA's lerp takes one dtype per call, as update_parameters groups
                group = by_dtype.setdefault(averaged.dtype, ([], []))
                group[0].append(averaged.detach())
                group[1].append(current.detach())
            for averaged, current in by_dtype.values():
                self.multi_avg_fn(averaged, current, self.n_averaged)
        self.n_averaged += 1
