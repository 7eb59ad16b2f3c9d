"""Differentiable augmentation of D's inputs (gdm.augment): DiffAugment's operations, the ADA pipeline
and its controller, gradients to G, and the models that use them."""

from __future__ import annotations

import csv
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from gdm.augment.ada import AdaptiveAugment, augment, geometric_matrix
from gdm.augment.diffaugment import DiffAugment, color, cutout, translation
from gdm.models.adversarial import build_augment
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 16, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- DiffAugment --------------------------------------------------------------------------------


def test_translation_moves_each_image_by_at_most_an_eighth_and_shifts_in_zeros():
    torch.manual_seed(0)
    x = images(32)
    y = translation(x)
    assert y.shape == x.shape
    for xi, yi in zip(x, y):  # a whole-pixel shift (dy, dx) within +-4: find it
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(yi[:, max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)],
                                xi[:, max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)])]
        assert len(found) == 1
        dy, dx = found[0]
        shifted_in = torch.ones(32, 32, dtype=torch.bool)
        shifted_in[max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)] = False
        assert (yi[:, shifted_in] == 0).all()


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    torch.manual_seed(0)
    y = cutout(torch.ones(64, 1, 32, 32))
    zeros = (y == 0).sum(dim=(1, 2, 3))
    assert y.unique().tolist() == [0.0, 1.0]
    assert zeros.max() == 16 * 16 and zeros.min() >= 8 * 8  # centres reach the border: at least a quarter stays
    rows = (y[:, 0] == 0).any(dim=2).sum(dim=1)
    assert (rows <= 16).all()


def test_color_is_the_reference_brightness_saturation_contrast():
    torch.manual_seed(0)
    x = images(256, channels=3)
    y = color(x)
    # Brightness is U(-0.5, 0.5), saturation and contrast scale around means: the per-image mean shift
    # is the brightness draw, so it stays within +-0.5 and spreads over the whole interval.
    shift = (y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)))
    assert shift.abs().max() <= 0.5 + 1e-5 and shift.min() < -0.4 and shift.max() > 0.4
    # A pair stacked on channels gets one draw: the two halves' brightness shifts agree.
    pair = color(torch.cat([x, x], dim=1), channels=3)
    assert torch.allclose(pair[:, :3], pair[:, 3:])


def test_diffaugment_policy_strings_and_lists():
    assert DiffAugment("color, translation").policy == ["color", "translation"]
    assert DiffAugment(["translation", "cutout"]).policy == ["translation", "cutout"]  # a command-line list
    assert build_augment(None) is None
    x = images(4).contiguous(memory_format=torch.channels_last)
    assert DiffAugment()(x).is_contiguous(memory_format=torch.channels_last)


# ---- ADA ----------------------------------------------------------------------------------------


def test_ada_at_p0_is_the_identity_and_at_p1_changes_every_image_within_range():
    x = images(32, channels=3)
    assert torch.equal(augment(x, torch.tensor(0.0)), x)
    torch.manual_seed(0)
    y = augment(x, torch.tensor(1.0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert ((y - x).abs().flatten(1).max(dim=1).values > 0.1).all()
    # Geometry alone (a constant image) only reflects and resamples: values stay; colour moves them.
    grey = torch.zeros(64, 1, 16, 16)
    out = augment(grey, torch.tensor(1.0))
    per_image = out.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)  # still constant
    assert per_image[:, 0].std() > 0.1  # brightness / contrast


def test_ada_applies_each_operation_with_probability_p():
    torch.manual_seed(0)
    _, touched = geometric_matrix(20000, 8, 8, torch.tensor(0.2), torch.device("cpu"))
    # 6 geometric operations of probability p and two rotations of 1 - sqrt(1 - p): 0.8^7 draw none.
    assert 1 - touched.float().mean().item() == pytest.approx(0.8 ** 7, abs=0.01)
    x = images(20000, channels=1, size=8)
    y = augment(x, torch.tensor(0.2))
    # The grey colour operations (brightness, contrast) are applied with p each, on top: a drawn
    # operation always changes a random image, except a flip / quarter turn / integer shift drawn as 0.
    untouched = (y == x).flatten(1).all(dim=1).float().mean().item()
    assert 0.8 ** 9 - 0.01 < untouched < 0.8 ** 7 * 0.8 ** 2 * 1.6


@pytest.mark.parametrize("name", ["diffaugment", "ada"])
def test_gradients_reach_the_generator_through_the_augmented_fakes(name):
    torch.manual_seed(0)
    gan = GAN((1, 16, 16), generator=partial(DCGANGenerator, ngf=8), latent_dim=8,
              discriminator=partial(DCGANDiscriminator, ndf=8), augment=name)
    if name == "ada":
        gan.augment.p.fill_(1.0)
    fake = gan.generator(torch.randn(8, 8))
    seen = gan.d_input(fake)
    assert not torch.equal(seen, fake)
    gan.adversarial.g_loss(gan.discriminator(seen)).backward()
    grads = [p.grad for p in gan.generator.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_real_and_fake_batches_draw_their_own_transforms():
    torch.manual_seed(0)
    a = DiffAugment("translation")
    x = images(64)
    assert not torch.equal(a(x), a(x))


def feed(ada: AdaptiveAugment, batches: int, sign_mean: float, batch_size: int = 64) -> None:
    positive = round((1 + sign_mean) / 2 * batch_size)
    logits = torch.tensor([1.0] * positive + [-1.0] * (batch_size - positive))
    for _ in range(batches):
        ada.observe(logits)


def test_ada_p_rises_by_the_papers_step_while_d_is_overconfident_and_stays_at_0_otherwise():
    ada = AdaptiveAugment(ada_target=0.6, ada_interval=4, ada_kimg=500)
    feed(ada, 3, sign_mean=1.0)
    assert ada.p.item() == 0.0  # not an interval yet
    feed(ada, 1, sign_mean=1.0)
    assert ada.rt.item() == 1.0
    assert ada.p.item() == pytest.approx(64 * 4 / 500_000)
    feed(ada, 400, sign_mean=1.0)
    assert ada.p.item() == pytest.approx(101 * 64 * 4 / 500_000)
    feed(ada, 8, sign_mean=0.25)  # below the target: p falls back
    assert ada.p.item() == pytest.approx(99 * 64 * 4 / 500_000)
    calm = AdaptiveAugment()
    feed(calm, 400, sign_mean=0.0)
    assert calm.p.item() == 0.0 and calm.rt.item() == 0.0


@pytest.mark.slow
def test_ada_p_rises_when_d_overfits_a_tiny_set_and_stays_at_0_on_a_trivial_one():
    """A real discriminator trained on 8 digits against noise soon tells them apart (r_t -> 1, p rises);
    against fakes that are the same digits it cannot (r_t < target, p stays 0)."""
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:8], dtype=torch.float32)[:, None] / 8 - 1  # (8, 1, 8, 8)
    reals = torch.nn.functional.interpolate(digits, size=16, mode="bilinear").repeat(4, 1, 1, 1)

    def train(fakes_like_reals: bool) -> float:
        torch.manual_seed(1)
        d = DCGANDiscriminator((1, 16, 16), ndf=8, norm="none")
        ada = AdaptiveAugment(ada_interval=1, ada_kimg=0.5)  # p moves 32 / 500 per batch
        opt = torch.optim.Adam(d.parameters(), lr=2e-3)
        for _ in range(60):
            fakes = reals.clone() if fakes_like_reals else torch.rand_like(reals) * 2 - 1
            real_logits, fake_logits = d(ada(reals)), d(ada(fakes))
            ada.observe(real_logits)
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return ada.p.item()

    assert train(fakes_like_reals=False) > 0.5
    assert train(fakes_like_reals=True) < 0.1


def test_ada_state_is_in_the_state_dict():
    ada = AdaptiveAugment(ada_interval=4)
    feed(ada, 6, sign_mean=1.0)
    state = ada.state_dict()
    assert set(state) == {"p", "rt", "sums", "_extra_state"} and state["_extra_state"] == {"batches": 6}
    restored = AdaptiveAugment(ada_interval=4)
    restored.load_state_dict(state)
    feed(ada, 2, sign_mean=1.0)
    feed(restored, 2, sign_mean=1.0)  # the interval that started before the save ends at the same batch
    assert restored.p.item() == ada.p.item() == pytest.approx(2 * 64 * 4 / 500_000)


def test_ada_settings_are_checked_only_where_ada_is_in_use():
    """StyleGAN2-ADA's settings are ADA's: out of range they are refused by ADA (a ValidationError naming the
    parameter; the task names the config key), and ignored where another augmentation, or none, is chosen."""
    with pytest.raises(ValidationError) as caught:
        build_augment("ada", ada_target=1.5)
    assert [e["loc"] for e in caught.value.errors()] == [("ada_target",)]
    assert build_augment(None, ada_target=1.5, ada_interval=0) is None
    assert isinstance(build_augment("diffaugment", ada_target=1.5, ada_interval=0), DiffAugment)


def test_ada_rotation_probability_makes_the_two_rotations_p_overall():
    p = torch.tensor(0.36)
    p_rot = 1 - torch.sqrt(1 - p)
    assert (1 - (1 - p_rot) ** 2).item() == pytest.approx(0.36)
    assert math.isclose(p_rot.item(), 0.2, rel_tol=1e-6)


# ---- the models, end to end ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("model", "augment"), [("cyclegan", "ada"), ("pix2pix", "ada")])
def test_every_adversarial_model_trains_with_augmentation_and_checkpoints_p(model, augment, tmp_path):
    """(The default GAN and cGAN train with DiffAugment translation: every GAN run of the suite covers them.)"""
    from helpers import TINY_CYCLEGAN, TINY_PIX2PIX, compose_config

    from gdm.app import run

    base = {"cyclegan": TINY_CYCLEGAN, "pix2pix": TINY_PIX2PIX}[model]
    run(compose_config([*base, f"model.augment={augment}", "model.ada_interval=1", "model.ada_kimg=0.001",
                        "logger=csv", "trainer.log_every_n_steps=1", "test_after_fit=false"], tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    # p steps of a whole batch: 0 or 1 after each of the two batches
    assert state["augment._extra_state"]["batches"] == 2
    assert state["augment.p"].item() in (0.0, 1.0)
    logged_p = [float(r["val/ada_p"]) for r in rows if r.get("val/ada_p")]
    assert logged_p[-1] == state["augment.p"].item()  # the evaluation logged the p it checkpointed
    assert any(r.get("train/ada_rt") for r in rows)
