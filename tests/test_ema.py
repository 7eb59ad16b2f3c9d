"""The EMA of a net's weights: the first update copies, later ones average with the given decay, and an EMA
restored from a state dict (a resumed run) continues the same average, with a fixed or a scheduled decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gdm.models.ema import EMA


def net_with(value: float) -> nn.Module:
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


@pytest.mark.parametrize("scheduled", [False, True])
def test_ema_averages_and_a_restored_ema_continues_the_same_average(scheduled):
    decay = 0.9
    kwargs = {"decay": 0.5} if scheduled else {}  # a schedule's decay overrides the constructor's
    ema = EMA(net_with(0.0), decay=decay)
    ema.update(net_with(4.0), **kwargs)  # the first update copies
    assert ema.module.weight.flatten().tolist() == [4.0, 4.0]
    ema.update(net_with(0.0), **kwargs)
    d = kwargs.get("decay", decay)
    assert ema.module.bias.item() == pytest.approx(4.0 * d)
    restored = EMA(net_with(0.0), decay=decay)
    restored.load_state_dict(ema.state_dict())  # a new process: only the state dict survives
    for e in (ema, restored):
        e.update(net_with(10.0), **kwargs)
    expected = 4.0 * d * d + 10.0 * (1 - d)  # averaged, not copied, on the restored EMA's first update
    assert ema.module.bias.item() == pytest.approx(expected)
    assert torch.equal(restored.module.bias, ema.module.bias) and int(restored.n_averaged) == 3
