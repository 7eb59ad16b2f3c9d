"""Adversarial losses at hand-computed values, and the gradient penalties on linear critics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gdm.losses import LOSSES, LeCam, get_loss, gradient_penalty, r1_penalty


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_vanilla_at_zero_logits():
    loss = get_loss("vanilla")
    zeros = torch.zeros(6, dtype=torch.float64)
    assert loss.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-12)
    assert loss.g_loss(zeros).item() == pytest.approx(math.log(2), rel=1e-12)
    assert loss.gradient_penalty_weight == 0


def test_vanilla_matches_bce():
    real, fake = t(2.0, -1.0, 0.3), t(-3.0, 0.5, 1.5)
    bce = nn.functional.binary_cross_entropy_with_logits
    d = get_loss("vanilla").d_loss(real, fake).item()
    assert d == pytest.approx((bce(real, torch.ones(3, dtype=torch.float64))
                               + bce(fake, torch.zeros(3, dtype=torch.float64))).item(), rel=1e-12)
    # Non-saturating G loss: -log sigmoid(D(G(z))).
    g = get_loss("vanilla").g_loss(fake).item()
    assert g == pytest.approx(-torch.log(torch.sigmoid(fake)).mean().item(), rel=1e-12)


def test_vanilla_is_stable_for_large_logits():
    big = t(1000.0, -1000.0)
    loss = get_loss("vanilla")
    assert math.isfinite(loss.d_loss(big, big).item())
    assert loss.d_loss(t(1000.0), t(-1000.0)).item() == pytest.approx(0.0, abs=1e-12)
    assert loss.g_loss(t(-1000.0)).item() == pytest.approx(1000.0)


def test_lsgan_values():
    loss = get_loss("lsgan")
    real, fake = t(1.0, 3.0), t(0.0, 2.0)
    # 0.5 * (mean((r-1)^2) + mean(f^2)) = 0.5 * ((0 + 4)/2 + (0 + 4)/2) = 2
    assert loss.d_loss(real, fake).item() == pytest.approx(2.0, rel=1e-12)
    # 0.5 * mean((f-1)^2) = 0.5 * (1 + 1)/2 = 0.5
    assert loss.g_loss(fake).item() == pytest.approx(0.5, rel=1e-12)
    assert loss.d_loss(t(1.0), t(0.0)).item() == 0.0


def test_hinge_values():
    loss = get_loss("hinge")
    real, fake = t(2.0, 0.5), t(-2.0, 0.5)
    # mean(relu(1 - r)) = (0 + 0.5)/2 = 0.25; mean(relu(1 + f)) = (0 + 1.5)/2 = 0.75
    assert loss.d_loss(real, fake).item() == pytest.approx(1.0, rel=1e-12)
    assert loss.g_loss(fake).item() == pytest.approx(0.75, rel=1e-12)  # -mean(f) = -(-2 + 0.5)/2
    assert loss.gradient_penalty_weight == 0


def test_wgan_gp_values():
    loss = get_loss("wgan-gp")
    real, fake = t(3.0, 1.0), t(-1.0, 0.0)
    assert loss.d_loss(real, fake).item() == pytest.approx(-0.5 - 2.0, rel=1e-12)
    assert loss.g_loss(fake).item() == pytest.approx(0.5, rel=1e-12)
    assert loss.gradient_penalty_weight == 10.0


def test_losses_registry():
    assert set(LOSSES) == {"vanilla", "lsgan", "hinge", "wgan-gp"}



class LinearCritic(nn.Module):
    """D(x) = sum(w * x) per sample: grad_x D = w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_gradient_penalty_of_linear_critic(scale):
    gen = torch.Generator().manual_seed(0)
    w = scale * torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
    critic = LinearCritic(w)
    real = torch.randn(5, 2, 3, 3, generator=gen, dtype=torch.float64)
    fake = torch.randn(5, 2, 3, 3, generator=gen, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake)
    expected = (w.norm() - 1) ** 2
    assert gp.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)


def test_gradient_penalty_is_differentiable_wrt_critic():
    w = torch.full((1, 1, 2, 2), 1.0, dtype=torch.float64)  # ||w|| = 2
    critic = LinearCritic(w.clone())
    real, fake = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(1.0)
    (grad,) = torch.autograd.grad(gp, critic.w)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = w here
    torch.testing.assert_close(grad, w)


def test_gradient_penalty_does_not_backprop_into_inputs():
    critic = LinearCritic(torch.randn(1, 1, 2, 2))
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    fake = torch.randn(3, 1, 2, 2, requires_grad=True)
    gp = gradient_penalty(critic, real, fake)
    gp.backward()
    assert real.grad is None and fake.grad is None
    assert critic.w.grad is not None


def test_gradient_penalty_interpolates_per_sample():
    # A critic whose gradient depends on x: D(x) = 0.5 * sum(x^2), grad = x_hat, which lies on the
    # segment between real and fake, so its norm is between theirs for this 1-d setting.
    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).flatten(1).sum(1)

    real = torch.full((64, 1, 1, 1), 3.0, dtype=torch.float64)
    fake = torch.full((64, 1, 1, 1), 1.0, dtype=torch.float64)
    torch.manual_seed(0)
    gp = gradient_penalty(Quadratic(), real, fake).item()
    # ||grad|| - 1 = x_hat - 1 = 2 alpha with alpha ~ U(0, 1): E[4 alpha^2] = 4/3
    assert 0 < gp < 4
    assert gp == pytest.approx(4 / 3, rel=0.25)


def test_r1_penalty_of_linear_critic():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(1, 3, 4, 4, generator=gen, dtype=torch.float64)
    critic = LinearCritic(w)
    real = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    r1 = r1_penalty(critic(real), real)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-12)
    (grad,) = torch.autograd.grad(r1, critic.w)  # create_graph: the penalty trains D
    torch.testing.assert_close(grad, 2 * w)


def test_r1_penalty_of_quadratic_critic():
    real = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64).view(2, 1, 1, 2).requires_grad_(True)
    logits = 0.5 * real.pow(2).flatten(1).sum(1)  # grad = x: ||x||^2 = 5 and 9, mean 7
    assert r1_penalty(logits, real).item() == pytest.approx(7.0)


def test_lecam_at_hand_computed_values():
    lecam = LeCam(lecam_decay=0.9)
    real, fake = t(2.0, 0.0), t(-1.0, -3.0)  # means 1 and -2
    # First batch: the debiased averages are the batch means, a_R = 1, a_F = -2.
    # relu(D(x) - a_F)^2: (4^2 + 2^2) / 2 = 10; relu(a_R - D(G(z)))^2: (2^2 + 4^2) / 2 = 10.
    assert lecam(real, fake).item() == pytest.approx(20.0)
    assert lecam.anchors.tolist() == pytest.approx([0.1, -0.2]) and lecam.weight.item() == pytest.approx(0.1)
    # Second batch, means 3 and 0: biased EMAs 0.9 * (0.1, -0.2) + 0.1 * (3, 0) = (0.39, -0.18), debiased by
    # 1 - 0.9^2 = 0.19: a_R = 39/19, a_F = -18/19.
    a_real, a_fake = 0.39 / 0.19, -0.18 / 0.19
    real, fake = t(3.0, 3.0), t(0.0, 0.0)
    expected = (3.0 - a_fake) ** 2 + (a_real - 0.0) ** 2
    assert lecam(real, fake).item() == pytest.approx(expected)


def test_lecam_is_zero_when_real_below_fake_anchor_and_fake_above_real_anchor():
    lecam = LeCam()
    lecam(t(0.0), t(0.0))  # anchors at 0
    # Means -1.5 and 1.5 move the debiased anchors to a_R = -0.754, a_F = 0.754: every D(x) is below a_F
    # and every D(G(z)) above a_R, so neither term has anything to pull back.
    assert lecam(t(-1.0, -2.0), t(1.0, 2.0)).item() == 0.0
    assert lecam(t(2.0, 2.0), t(-2.0, -2.0)).item() > 0  # real above a_F, fake below a_R: both pull back


def test_lecam_gradient_reaches_the_logits_only():
    lecam = LeCam()
    real = t(1.0, 2.0).requires_grad_(True)
    fake = t(-1.0, 0.5).requires_grad_(True)
    lecam(real, fake).backward()
    assert real.grad.abs().sum() > 0 and fake.grad.abs().sum() > 0
    assert not lecam.anchors.requires_grad


def test_lecam_stays_debiased_when_the_decay_changes():
    # 10 updates at 0.99 with constant means 1 and -1, then the decay changes (a run resumed with another
    # model.lecam_decay): the anchors stay at the means, as the accumulated weight follows the decay.
    lecam = LeCam(lecam_decay=0.99)
    for _ in range(10):
        lecam(t(1.0), t(-1.0))
    resumed = LeCam(lecam_decay=0.9)
    resumed.load_state_dict(lecam.state_dict())
    resumed(t(1.0), t(-1.0))
    assert (resumed.anchors / resumed.weight).tolist() == pytest.approx([1.0, -1.0])

