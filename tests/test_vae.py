"""VAE and AE: KL, ELBO and IWAE bounds with values, training progress, samples."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from gdm.data.digits import DigitsDataModule
from gdm.likelihoods import Bernoulli, Gaussian, pixel_levels
from gdm.models.ae import AE
from gdm.models.vae import VAE, diag_gaussian_log_prob, gaussian_kl

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 16, 16)


def make_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(SHAPE, latent_dim=kwargs.pop("latent_dim", 8), width=kwargs.pop("width", 16), **kwargs)


def fit(model, epochs: int = 1, batches: int | None = None) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=DigitsDataModule(image_size=16, batch_size=64))
    return trainer


@pytest.fixture(scope="module")
def val_images() -> torch.Tensor:
    return DigitsDataModule(image_size=16).split("val").images


@pytest.fixture(scope="module")
def trained_vae() -> VAE:
    model = make_vae(likelihood="gaussian")
    fit(model, epochs=8)
    return model.eval()


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6) * 0.5
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 4, 6)
    log_q = diag_gaussian_log_prob(z, mu, logvar)
    log_p = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(mc, gaussian_kl(mu, logvar), atol=0.03)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


@pytest.mark.slow
def test_iwae_with_one_sample_is_the_elbo(val_images):
    vae = make_vae(likelihood="gaussian").eval()
    x = val_images[:8]
    targets = vae.likelihood.targets(x)
    with torch.no_grad():
        # Same seed -> same z: IWAE(k=1) = log p(x|z) + log p(z) - log q(z|x) exactly.
        torch.manual_seed(1)
        iwae1 = vae.iwae_log_likelihood(x, 1, targets)
        torch.manual_seed(1)
        mu, logvar = vae.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        log_px = vae.likelihood.log_prob(targets, vae.decoder(z))
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
        assert torch.allclose(iwae1, log_px + log_pz - diag_gaussian_log_prob(z, mu, logvar), atol=1e-3)
        # ... and its mean over draws is the ELBO with the analytic KL.
        draws = torch.stack([vae.iwae_log_likelihood(x, 1, targets) for _ in range(400)])
        elbo = torch.stack([vae.elbo_terms(x, targets)[0] for _ in range(400)]).mean(0) - gaussian_kl(mu, logvar)
    assert torch.allclose(draws.mean(0), elbo, rtol=2e-3)


@pytest.mark.slow
def test_iwae_tightens_with_k_and_beats_the_elbo(trained_vae, val_images):
    x = val_images[:64]
    targets = trained_vae.likelihood.targets(x)
    nll = {}
    for k in (1, 10, 100):
        torch.manual_seed(0)
        nll[k] = -trained_vae.iwae_log_likelihood(x, k, targets).mean().item()
    with torch.no_grad():
        log_px, kl = trained_vae.elbo_terms(x, targets)
    neg_elbo = (kl - log_px).mean().item()
    assert nll[1] > nll[10] > nll[100]
    assert nll[100] <= neg_elbo
    assert nll[1] - nll[100] > 1.0  # nats: a visible tightening on a trained model


def test_short_training_lowers_the_validation_loss(val_images):
    vae = make_vae(likelihood="gaussian").eval()
    x = val_images
    targets = vae.likelihood.targets(x)

    def neg_elbo(model):
        torch.manual_seed(0)
        with torch.no_grad():
            log_px, kl = model.elbo_terms(x, targets)
        return (kl - log_px).mean().item()

    before = neg_elbo(vae)
    fit(vae, epochs=2)
    after = neg_elbo(vae.eval())
    assert after < before - 80  # measured: 1687 -> 1522 nats per 16x16 image after 2 epochs


def test_kl_warmup_schedule():
    vae = make_vae(beta=4.0, kl_warmup_steps=100)
    assert vae.kl_weight() == 0.0  # global_step 0 before training
    assert make_vae(beta=4.0).kl_weight() == 4.0


@pytest.mark.parametrize("model_cls", [VAE, AE])
def test_samples_shape_range_and_determinism(model_cls):
    torch.manual_seed(0)
    model = model_cls(SHAPE, latent_dim=8, width=16).eval()
    a, b = model.generate(range(10), seed=3), model.generate(range(10), seed=3)
    assert a.shape == (10, *SHAPE) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, model.generate(range(10), seed=4))


def test_ae_latent_gaussian_matches_the_codes():
    torch.manual_seed(0)
    ae = AE(SHAPE, latent_dim=4, width=8).eval()
    images = DigitsDataModule(image_size=16).split("train").images[:500]
    loader = torch.utils.data.DataLoader([{"image": x} for x in images], batch_size=64)
    ae.prepare_sampling(loader)
    with torch.no_grad():
        z = ae.encode(images).double()
    assert torch.allclose(ae.latent_mean.double(), z.mean(0), atol=1e-5)
    cov = ae.latent_scale_tril.double() @ ae.latent_scale_tril.double().T
    assert torch.allclose(cov, torch.cov(z.T), atol=1e-4)


def test_visual_grids_of_given_examples():
    ae = AE(SHAPE, latent_dim=4, width=8)
    fit(ae, epochs=1, batches=2)
    examples = DigitsDataModule(image_size=16).split("val").images[:40]
    grids = ae.visuals({"val": examples})
    assert set(grids) == {"samples", "reconstructions", "interpolations"}
    assert grids["reconstructions"][0].shape == (64, *SHAPE)  # 32 inputs, each beside its reconstruction
    assert grids["interpolations"][0].shape == (64, *SHAPE)


def test_gaussian_likelihood_is_a_bound_on_8_bit_levels():
    x = torch.tensor([[[[-1.0, 1.0]]]])  # levels 0 and 255
    assert torch.equal(pixel_levels(x), torch.tensor([[[[0.0, 255.0]]]]))
    lik = Gaussian(std=0.1)
    targets = lik.targets(x)
    assert ((targets * 256 >= pixel_levels(x)) & (targets * 256 < pixel_levels(x) + 1)).all()
    params = targets.clone()  # mean exactly at the target
    expected = 2 * (-0.5 * math.log(2 * math.pi * 0.01)) - 2 * math.log(256)
    assert lik.log_prob(targets, params).item() == pytest.approx(expected, rel=1e-6)


def test_bernoulli_likelihood_values():
    lik = Bernoulli()
    targets = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.zeros(1, 1, 1, 2)
    assert lik.log_prob(targets, logits).item() == pytest.approx(2 * math.log(0.5))
