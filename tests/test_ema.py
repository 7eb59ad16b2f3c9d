"""The EMA of a net's weights: the first update copies, later ones average with the half-life's decay (ramped up
over the images seen, as StyleGAN2-ADA and EDM do), and an EMA restored from a state dict (a resumed run) continues
the same average with the same count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gdm.models.ema import EMA, halflife_decay


def net_with(value: float) -> nn.Module:
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def test_halflife_decay_follows_the_reference_formula():
    # StyleGAN2-ADA: ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup); ema_beta = 0.5 ** (batch / ema_nimg)
    assert halflife_decay(64, 1_000_000, 20.0, 0.05) == pytest.approx(0.5 ** (64 / 20_000))
    assert halflife_decay(64, 10_000, 20.0, 0.05) == pytest.approx(0.5 ** (64 / 500))
    assert halflife_decay(64, 10_000, 20.0, None) == pytest.approx(0.5 ** (64 / 20_000))
    assert halflife_decay(64, 0, 20.0, 0.05) == 0.0


@pytest.mark.parametrize("rampup_ratio", [None, 0.05])
def test_ema_averages_and_a_restored_ema_continues_the_same_average(rampup_ratio):
    ema = EMA(net_with(0.0), halflife_kimg=0.064, rampup_ratio=rampup_ratio)  # 64 images: 0.5 per 64 at full length
    ema.update(net_with(4.0), 64)  # the first update copies
    assert ema.module.weight.flatten().tolist() == [4.0, 4.0]
    d = ema.decay(64)
    expected_d = 0.5 ** (64 / (6.4 if rampup_ratio else 64))  # 128 images seen: ramped up to 0.05 x 128
    assert d == pytest.approx(expected_d)
    ema.update(net_with(0.0), 64)
    assert ema.module.bias.item() == pytest.approx(4.0 * d)
    restored = EMA(net_with(0.0), halflife_kimg=0.064, rampup_ratio=rampup_ratio)
    restored.load_state_dict(ema.state_dict())  # a new process: only the state dict survives
    d2 = ema.decay(64)
    assert restored.decay(64) == pytest.approx(d2)  # the count came with the state
    for e in (ema, restored):
        e.update(net_with(10.0), 64)
    expected = 4.0 * d * d2 + 10.0 * (1 - d2)  # averaged, not copied, on the restored EMA's first update
    assert ema.module.bias.item() == pytest.approx(expected)
    assert torch.equal(restored.module.bias, ema.module.bias) and int(restored.n_averaged) == 3
    assert float(restored.images_seen) == 192


def test_batch_norm_statistics_are_averaged_and_counts_copied():
    net = nn.BatchNorm1d(2)
    ema = EMA(net, halflife_kimg=1.0, rampup_ratio=None)
    net.train()
    net(torch.randn(8, 2))
    ema.update(net, 8)  # a copy
    first = net.running_mean.clone()
    assert torch.equal(ema.module.running_mean, first)
    net(torch.randn(8, 2) + 5)
    ema.update(net, 8)
    d = 0.5 ** (8 / 1000)
    torch.testing.assert_close(ema.module.running_mean, d * first + (1 - d) * net.running_mean)
    assert int(ema.module.num_batches_tracked) == 2
