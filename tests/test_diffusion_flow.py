"""Diffusion (EDM, DDPM) and flow matching: the training targets, noise levels and loss weights against the papers'
formulas, sampler steps against the reference implementations, per-index seeding, the likelihood against analytic
Gaussians, and short trainings on a toy distribution whose samples must match its moments."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from gdm.errors import GdmError
from gdm.models.diffusion import EDM, Diffusion
from gdm.models.flow import Flow, ot_pairing
from gdm.nets.time_mlp import TimeMLP
from gdm.nets.unet import UNet


class Recorder(nn.Module):
    """A stand-in net: returns `fn(x, c_noise, labels)` and records its inputs."""

    def __init__(self, fn, image_shape=None, num_classes=None):
        super().__init__()
        self.fn, self.calls = fn, []
        self.w = nn.Parameter(torch.zeros(()))  # the optimizer and the EMA need a parameter

    def forward(self, x, c_noise, labels=None):
        self.calls.append((x.clone(), c_noise.clone(), labels))
        return self.fn(x, c_noise, labels) + 0 * self.w


def stub(fn):
    return lambda image_shape, num_classes=None: Recorder(fn, image_shape, num_classes)


def tiny_unet(**kw):
    return partial(UNet, channels=8, channel_mult=(1, 2), num_res_blocks=1, patch_size=2, **kw)


# ---- EDM -------------------------------------------------------------------------------------

def test_edm_preconditioning_and_loss_weight_are_table_1():
    edm = EDM()
    sigma = torch.tensor([0.002, 0.5, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma)
    sd = 0.5
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / torch.sqrt(sigma**2 + sd**2))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(sigma**2 + sd**2))
    torch.testing.assert_close(c_noise, torch.log(sigma) / 4)
    torch.testing.assert_close(edm.loss_weight(sigma), (sigma**2 + sd**2) / (sigma * sd) ** 2)
    assert float(edm.loss_weight(torch.tensor(0.5))) == pytest.approx(8.0)  # 0.5 / 0.0625


def test_edm_training_sigmas_are_log_normal_with_the_papers_parameters():
    edm = EDM()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    sigma = edm.training_sigma(10_000, "cpu", g1)
    torch.testing.assert_close(sigma, torch.exp(torch.randn(10_000, generator=g2) * 1.2 - 1.2))
    assert float(sigma.log().mean()) == pytest.approx(-1.2, abs=0.05)
    assert float(sigma.log().std()) == pytest.approx(1.2, abs=0.05)


def reference_edm_sampler(denoise, latents, num_steps=18, sigma_min=0.002, sigma_max=80, rho=7):
    """NVlabs/edm generate.py `edm_sampler`, deterministic (S_churn = 0), transcribed."""
    step_indices = torch.arange(num_steps, dtype=torch.float64)
    t_steps = (sigma_max ** (1 / rho) + step_indices / (num_steps - 1) * (
        sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t_steps = torch.cat([t_steps, torch.zeros_like(t_steps[:1])])
    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(itertools.pairwise(t_steps)):
        x_cur = x_next
        t_hat, x_hat = t_cur, x_cur
        denoised = denoise(x_hat, t_hat).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            denoised = denoise(x_next, t_next).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def gaussian_denoiser(mean: float, std: float):
    """The exact denoiser E[x | x + n] of data N(mean, std^2) under noise N(0, sigma^2)."""
    return lambda x, sigma: mean + std**2 / (std**2 + sigma**2) * (x - mean)


@pytest.mark.parametrize("steps", [2, 5, 18])
def test_edm_heun_sampler_equals_the_reference_and_the_exact_ode_solution(steps):
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    denoise = gaussian_denoiser(0.0, 0.5)
    ours = EDM().sample(denoise, noise, steps, heun=True)
    # the reference's denoiser (EDMPrecond) casts its input to float32, as ours does
    reference = reference_edm_sampler(lambda x, sigma: denoise(x.float(), sigma), noise, num_steps=steps)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=1e-6)


def test_edm_heun_sampler_converges_to_the_exact_ode_solution_at_second_order():
    # the probability-flow ODE of N(0, s^2) data maps x(sigma_max) to x(sigma_max) s / sqrt(s^2 + sigma_max^2)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    exact = noise * 80 * 0.5 / math.sqrt(0.25 + 80**2)
    error = {n: float(((EDM().sample(gaussian_denoiser(0.0, 0.5), noise, n, heun=True) - exact) / exact).abs().max())
             for n in (18, 50, 200)}
    assert error[18] < 0.06 and error[200] < 1e-3
    assert error[50] / error[200] > 12  # 4x the steps: 16x less error for a second-order method


def reference_dpmpp_2m(denoise, latents, sigmas):
    """k-diffusion's `sample_dpmpp_2m` (crowsonkb/k-diffusion sampling.py; DPM-Solver++(2M), Lu et al. 2022),
    transcribed, in float64 on the noise levels `sigmas` (steps + 1, the last 0)."""
    x, old_denoised = latents.double() * sigmas[0], None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - -sigmas[i - 1].log()) / h
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * denoised
                                                                   - (1 / (2 * r)) * old_denoised)
        old_denoised = denoised
    return x


def edm_net_of(denoise, scale: float, sigma_data: float = 0.5):
    """The net F whose EDM-preconditioned denoiser (Table 1, c_noise times `scale`) is `denoise`."""
    def net(x_in, c_noise, labels):
        sigma = torch.exp(4 * c_noise.double() / scale).view(-1, *[1] * (x_in.dim() - 1))
        x = x_in.double() * (sigma_data**2 + sigma**2).sqrt()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
        return ((denoise(x, sigma) - c_skip * x) / c_out).float()
    return net


@pytest.mark.parametrize("steps", [2, 5, 18])
def test_edm_dpm_solver_equals_k_diffusions_dpmpp_2m_and_converges_to_the_exact_ode_solution(steps):
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    denoise = gaussian_denoiser(0.0, 0.5)
    model = Diffusion((3,), stub(edm_net_of(denoise, 250.0)), sampler="dpmpp_2m", steps=steps)
    ours = model.solve(model.net, noise, None, range(16), seed=0)
    assert model.nfe() == steps and model.function_evaluations == steps
    reference = reference_dpmpp_2m(lambda x, sigma: denoise(x, sigma), noise, EDM().sigmas(steps))
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


def test_edm_dpm_solver_converges_at_second_order():
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    exact = noise * 80 * 0.5 / math.sqrt(0.25 + 80**2)
    model = Diffusion((3,), stub(edm_net_of(gaussian_denoiser(0.0, 0.5), 250.0)), sampler="dpmpp_2m")
    error = {}
    for n in (18, 50, 200):
        model.set_sampling("dpmpp_2m", n)
        error[n] = float(((model.solve(model.net, noise, None, range(16), seed=0) - exact) / exact).abs().max())
    assert error[18] < 0.07 and error[200] < 1e-3
    assert error[50] / error[200] > 12  # 4x the steps: 16x less error for a second-order method


def test_edm_unipc_follows_the_exact_ode_solution_on_the_flow_path():
    # UniPC on x_flow = x / (1 + sigma): EDM's exact map of N(0, 0.5^2) data, at second order in the steps
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    exact = noise * 80 * 0.5 / math.sqrt(0.25 + 80**2)
    model = Diffusion((3,), stub(edm_net_of(gaussian_denoiser(0.0, 0.5), 250.0)), sampler="unipc", steps=5)
    error = {}
    for n in (5, 40, 160):
        model.set_sampling("unipc", n)
        model.function_evaluations = 0
        error[n] = float(((model.solve(model.net, noise, None, range(16), seed=0) - exact) / exact).abs().max())
        assert model.nfe() == n == model.function_evaluations
    assert error[5] < 0.15 and error[160] < 3e-4
    assert error[40] / error[160] > 8  # 4x the steps: about 16x less error for a second-order method
    torch.testing.assert_close(model.edm.flow_grid(4), torch.tensor([80 / 81 * (1 - i / 4) for i in range(4)],
                                                                    dtype=torch.float64))
    protocol = model.sampling_protocol()
    assert protocol["grid"] == "uniform in sigma / (1 + sigma)" and "rho" not in protocol
    assert (protocol["solver_order"], protocol["solver_type"]) == (2, "bh2")  # what ran, as the scheduler was built


def test_every_unipc_protocol_records_the_solver_it_ran():
    """The flow's, EDM's and DDPM's UniPC protocols name the order and corrector of the scheduler they build."""
    from gdm.models.multistep import SOLVER_ORDER, SOLVER_TYPE

    models = [Flow((3,), stub(lambda x, t, labels: x), sampler="unipc", steps=4),
              Diffusion((3,), stub(edm_net_of(gaussian_denoiser(0.0, 0.5), 250.0)), sampler="unipc", steps=4),
              Diffusion((3,), stub(lambda x, t, labels: x), formulation="ddpm", sampler="unipc", steps=4)]
    built = models[2].ddpm_scheduler("unipc").config
    assert (built.solver_order, built.solver_type) == (SOLVER_ORDER, SOLVER_TYPE) == (2, "bh2")
    for model in models:
        protocol = model.sampling_protocol()
        assert (protocol["sampler"], protocol["nfe"]) == ("unipc", 4)
        assert (protocol["solver_order"], protocol["solver_type"]) == (2, "bh2"), type(model).__name__
    models[0].set_sampling("heun", 4)
    assert "solver_order" not in models[0].sampling_protocol()  # the other samplers keep their protocols
    from gdm.evaluation.context import sampling_words  # the printed line names EDM's grid, as its protocol does

    assert sampling_words(models[1].sampling_protocol()) == "unipc, 4 steps, NFE 4, grid uniform in sigma / (1 + sigma)"
    assert sampling_words(models[0].sampling_protocol()) == "heun, 4 steps, NFE 8"
    assert sampling_words({"sampler": "dopri5", "steps": None, "nfe": 74.1234}) == "dopri5, NFE 74.12"


@pytest.mark.parametrize(("formulation", "sampler", "steps"), [
    ("edm", "unipc", 2000), ("edm", "dpmpp_2m", 2000), ("ddpm", "unipc", 1000), ("ddpm", "dpmpp_2m", 1000)])
def test_multistep_samplers_step_through_long_grids_in_order(formulation, sampler, steps):
    # diffusers finds a scheduler's first step by its timestep: a grid whose rounded timesteps repeat (UniPC's on
    # the flow path from about 1,000 steps on) must still take every step once, and end at the data
    model = Diffusion((1, 2, 2), stub(lambda x, c, labels: 0.5 * x), formulation=formulation, sampler=sampler,
                      steps=steps)
    with torch.no_grad():
        out = model.solve(model.net, torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)), None,
                          range(3), 0)
    assert model.function_evaluations == steps and torch.isfinite(out).all()


def test_edm_noise_grid():
    grid = EDM().sigmas(18)
    assert grid[0] == pytest.approx(80.0) and grid[-2] == pytest.approx(0.002) and grid[-1] == 0
    assert len(grid) == 19 and bool((grid[:-1].diff() < 0).all())
    assert EDM().sigmas(1).tolist() == [80.0, 0.0]


def test_diffusion_edm_loss_is_the_weighted_denoising_error_of_the_preconditioned_net():
    net = stub(lambda x, c, labels: 0.3 * x)
    model = Diffusion((1, 4, 4), net)
    x = torch.rand(5, 1, 4, 4) * 2 - 1
    loss = model.loss(x, None, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    sigma = torch.exp(torch.randn(5, generator=g) * 1.2 - 1.2)
    s = sigma.view(-1, 1, 1, 1)
    c_skip, c_out, c_in = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt(), 1 / (s**2 + 0.25).sqrt()
    y = x + s * noise
    denoised = c_skip * y + c_out * 0.3 * (c_in * y)
    expected = (s.flatten() ** 2 + 0.25) / (s.flatten() * 0.5) ** 2 * ((denoised - x) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss, expected)
    _, c_noise, _ = model.net.calls[-1]
    torch.testing.assert_close(c_noise, 250 * sigma.log() / 4)  # the default c_noise_scale: DDPM's step scale
    own = Diffusion((1, 4, 4), net, c_noise_scale=1.0)
    own.loss(x, None, torch.Generator().manual_seed(1))
    torch.testing.assert_close(own.net.calls[-1][1], sigma.log() / 4)  # EDM's own


def test_settings_of_older_gdm_read_as_what_ran():
    from gdm.config_upgrades import upgrade_model_settings

    edm = {"formulation": "edm", "p_mean": -1.2}  # a diffusion model from before c_noise_scale
    assert upgrade_model_settings(edm, 64) == ["c_noise_scale, which older gdm did not have, read as 1: EDM's own "
                                               "c_noise, which it ran"]
    assert edm["c_noise_scale"] == 1.0
    ddpm = {"formulation": "ddpm", "p_mean": -1.2}  # no c_noise: nothing to read, nothing to tell apart
    assert upgrade_model_settings(ddpm, 64) == [] and "c_noise_scale" not in ddpm
    today = {"p_mean": -1.2, "c_noise_scale": 250.0}
    assert upgrade_model_settings(today, 64) == [] and today["c_noise_scale"] == 250.0
    flow = {"time_sampling": "uniform"}
    assert upgrade_model_settings(flow, 64) == [] and flow == {"time_sampling": "uniform"}
    gan = {"ema_decay": 0.999}
    assert upgrade_model_settings(gan, 64)[0].startswith("ema_decay read as model.ema_halflife_kimg=44.3")
    assert gan == {"ema_halflife_kimg": 44.339235, "ema_rampup_ratio": None}


@pytest.mark.slow
def test_a_diffusion_checkpoint_of_older_gdm_keeps_edms_c_noise(tmp_path):
    from helpers import TINY, TINY_ITERATIVE, compose_config, compose_typed

    from gdm.app import run
    from gdm.checkpoints import load_model

    run(compose_config(["model=diffusion", *TINY_ITERATIVE, *TINY, "logger=none", "test_after_fit=false"],
                       tmp_path / "run"))
    new = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    for settings in (new["gdm_config"]["model"], new["gdm_config_source"]["model"], new["hyper_parameters"]):
        settings.pop("c_noise_scale")
    torch.save(new, tmp_path / "old.ckpt")
    assert load_model(tmp_path / "run" / "checkpoints" / "last.ckpt").edm.c_noise_scale == 250.0
    assert load_model(tmp_path / "old.ckpt").edm.c_noise_scale == 1.0
    # the weights learned scale 1: resuming, or evaluating with the config group named again (today's default),
    # is refused in one sentence, and resumes with the checkpoint's value
    train = ["model=diffusion", *TINY_ITERATIVE, *TINY, "logger=none", "test_after_fit=false"]
    with pytest.raises(GdmError, match=r"holds weights trained with other settings than this run's "
                                       r"\(model\.c_noise_scale=250\.0, the checkpoint's is 1\.0\)"):
        run(compose_config([*train, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'old.ckpt'}"], tmp_path / "r1"))
    with pytest.raises(GdmError, match=r"holds weights trained for other settings than this run's "
                                       r"\(model\.c_noise_scale gives c_noise_scale=250\.0"):
        run(compose_typed(["task=eval", *train, f"ckpt_path={tmp_path / 'old.ckpt'}"], tmp_path / "e1"))
    run(compose_config([*train, "trainer.max_epochs=2", "model.c_noise_scale=1.0",
                        f"ckpt_path={tmp_path / 'old.ckpt'}"], tmp_path / "r2"))
    assert torch.load(tmp_path / "r2" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_heun_nfe_is_two_steps_minus_one_and_is_counted():
    model = Diffusion((2,), stub(lambda x, c, labels: torch.zeros_like(x)), steps=6)
    model.generate(range(3))
    assert model.nfe() == 11 and model.sampling_protocol()["nfe"] == 11 and model.function_evaluations == 11
    model.set_sampling("euler", 4)
    model.generate(range(3))
    assert model.function_evaluations == 4 and model.sampling_protocol()["sampler"] == "euler"


# ---- DDPM ------------------------------------------------------------------------------------

def test_ddpm_schedule_and_epsilon_target():
    model = Diffusion((1, 4, 4), stub(lambda x, c, labels: torch.zeros_like(x)), formulation="ddpm")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(model.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-5, atol=1e-7)
    x = torch.rand(4, 1, 4, 4) * 2 - 1
    loss = model.loss(x, None, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    torch.testing.assert_close(loss, (noise**2).flatten(1).mean(1))  # a zero prediction: the target is eps
    x_t, c_noise, _ = model.net.calls[-1]
    abar = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, abar.sqrt() * x + (1 - abar).sqrt() * noise)
    torch.testing.assert_close(c_noise, t.float())
    cosine = Diffusion((1, 4, 4), stub(lambda x, c, labels: x), formulation="ddpm", beta_schedule="cosine")
    s = 0.008  # Nichol & Dhariwal 2021: abar(t) = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) pi / 2)^2
    f = torch.cos((torch.arange(1, 1001, dtype=torch.float64) / 1000 + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(cosine.alphas_cumprod.double()[:900], (f / f0)[:900], rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m", "unipc"])
def test_ddpm_samplers_match_diffusers_steps_and_do_not_depend_on_the_batch(sampler):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    eps_fn = lambda x, c, labels: 0.5 * x + 0.01 * c.view(-1, 1, 1, 1)  # noqa: E731
    model = Diffusion((1, 4, 4), stub(eps_fn), formulation="ddpm", sampler=sampler, steps=10)
    whole = model.generate(range(6), seed=3)
    torch.testing.assert_close(torch.cat([model.generate([0, 1, 2], seed=3), model.generate([3, 4, 5], seed=3)]),
                               whole)
    # the same loop with diffusers' scheduler, written out, and sample i's noise from its own generator
    from gdm.models.base import latent_noise
    from gdm.models.iterative import index_generators

    cls = {"ancestral": DDPMScheduler, "ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
           "unipc": UniPCMultistepScheduler}[sampler]
    scheduler = cls(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x = latent_noise(range(6), 16, 3).view(6, 1, 4, 4)
    generators = index_generators(range(6), 3, stream=2)
    for t in scheduler.timesteps:
        eps = eps_fn(x, torch.full((6,), float(t)), None)
        x = scheduler.step(eps, t, x, **({"generator": generators} if sampler in ("ancestral", "ddim") else {})
                           ).prev_sample
    torch.testing.assert_close(whole, x.clamp(-1, 1))
    assert model.sampling_protocol()["nfe"] == 10


# ---- flow matching ---------------------------------------------------------------------------

def test_flow_loss_is_the_rectified_flow_velocity_error():
    model = Flow((1, 4, 4), stub(lambda x, c, labels: torch.zeros_like(x)))
    x = torch.rand(5, 1, 4, 4) * 2 - 1
    loss = model.loss(x, None, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(x.shape, generator=g)
    t = torch.rand(5, generator=g)
    torch.testing.assert_close(loss, ((x - x0) ** 2).flatten(1).mean(1))
    x_t, c_noise, _ = model.net.calls[-1]
    torch.testing.assert_close(x_t, t.view(-1, 1, 1, 1) * x + (1 - t.view(-1, 1, 1, 1)) * x0)
    torch.testing.assert_close(c_noise, 1000 * t)


def test_logit_normal_times():
    model = Flow((2,), stub(lambda x, c, labels: x), time_sampling="logit_normal", logit_mean=0.5, logit_std=0.8)
    t = model.training_times(20_000, "cpu", torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert float(logit.mean()) == pytest.approx(0.5, abs=0.03) and float(logit.std()) == pytest.approx(0.8, abs=0.03)


def test_u_shaped_times_are_lee_et_als_mixture_of_exponentials():
    # t or 1 - t, even odds, t of density a exp(a t) / (exp(a) - 1) on [0, 1] (Lee et al. 2024, t_dist.py)
    model = Flow((2,), stub(lambda x, c, labels: x), time_sampling="u_shaped", u_shape=4.0)
    t = model.training_times(100_000, "cpu", torch.Generator().manual_seed(0))
    a, x = 4.0, torch.linspace(0, 1, 11)
    cdf = 0.5 * (torch.expm1(a * x) - torch.expm1(a * (1 - x)) + math.expm1(a)) / math.expm1(a)
    torch.testing.assert_close((t[:, None] <= x).float().mean(0), cdf, atol=0.005, rtol=0)
    assert float(((t < 0.1) | (t > 0.9)).float().mean()) == pytest.approx(float(2 * cdf[1]), abs=0.01)


def test_ot_pairing_is_the_least_cost_permutation():
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    paired = ot_pairing(x0, x1)
    cost = float(((paired - x1) ** 2).sum())
    best = min(float(((x0[list(p)] - x1) ** 2).sum()) for p in itertools.permutations(range(6)))
    assert cost == pytest.approx(best)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))  # a permutation of the noise


@pytest.mark.parametrize(("sampler", "steps", "nfe"), [("euler", 5, 5), ("midpoint", 5, 10), ("heun", 4, 8)])
def test_flow_fixed_step_solvers(sampler, steps, nfe):
    # dx/dt = -x: each solver's one-step map, applied `steps` times, is its known update
    model = Flow((3,), stub(lambda x, c, labels: -x), sampler=sampler, steps=steps)
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    h = 1 / steps
    factor = {"euler": 1 - h, "midpoint": 1 - h + h**2 / 2, "heun": 1 - h + h**2 / 2}[sampler]
    out = model.solve(model.net, noise, None, range(4), 0)
    torch.testing.assert_close(out, noise * factor**steps, rtol=1e-5, atol=1e-6)
    assert model.nfe() == nfe


def test_flow_dopri5_is_accurate_and_its_nfe_measured():
    model = Flow((3,), stub(lambda x, c, labels: -x), sampler="dopri5")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    out = model.solve(model.net, noise, None, range(4), 0)
    torch.testing.assert_close(out, noise * math.exp(-1), rtol=1e-3, atol=1e-4)
    model.generate(range(4))
    protocol = model.sampling_protocol()
    assert protocol["nfe"] == model.function_evaluations > 6 and protocol["steps"] is None
    # over an evaluation's batches: the mean per sample (dopri5 picks one step size per batch)
    model = Flow((3,), stub(lambda x, c, labels: -x * (1 + 20 * x.abs().amax())), sampler="dopri5")
    model.begin_measurement()
    counts = []
    for batch in (range(0, 4), range(4, 10)):
        model.generate(batch)
        counts.append(model.function_evaluations)
    assert counts[0] != counts[1]  # a stiffer batch takes more steps
    assert model.sampling_protocol()["nfe"] == pytest.approx((4 * counts[0] + 6 * counts[1]) / 10)
    model.begin_measurement()
    assert model.sampling_protocol()["nfe"] is None


def test_flow_unipc_follows_the_exact_ode_solution_of_a_gaussian():
    # the linear path's ODE maps noise z to mean + std z for N(mean, std^2 I) data; UniPC at second order
    mean = torch.tensor([0.5, -1.0, 2.0])
    model = Flow((3,), stub(gaussian_velocity(mean, 0.3)), sampler="unipc", steps=5)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    error = {}
    for n in (5, 40, 160):
        model.set_sampling("unipc", n)
        model.function_evaluations = 0
        error[n] = float((model.solve(model.net, noise, None, range(16), 0) - (mean + 0.3 * noise)).abs().max())
        assert model.nfe() == n == model.function_evaluations
    assert error[5] < 0.2 and error[160] < 3e-4
    assert error[40] / error[160] > 8
    # a grid whose first two points round to the same integer timestep (999) in diffusers: it steps in order still
    model.set_sampling("unipc", 1000)
    model.function_evaluations = 0
    out = model.solve(model.net, noise, None, range(16), 0)
    assert model.function_evaluations == 1000 and float((out - (mean + 0.3 * noise)).abs().max()) < 1e-4


def test_image_samples_are_drawn_channels_last_and_the_weights_restored():
    torch.manual_seed(0)
    model = Flow((1, 8, 8), tiny_unet(dropout=0.0), sampler="unipc", steps=3)
    for p in model.net_ema.module.parameters():
        nn.init.normal_(p, std=0.1)  # not the zero-initialised output
    samples = model.generate(range(4), seed=1)
    with model.evaluating(model.net_ema.module):  # the same solve with NCHW weights and inputs
        nchw = model.solve(model.net_ema.module, model.initial_noise(range(4), 1), None, range(4), 1).clamp(-1, 1)
    torch.testing.assert_close(samples, nchw, rtol=1e-4, atol=1e-5)
    assert samples.abs().max() > 0.05  # not a zero net's output
    assert all(p.is_contiguous() for p in model.net_ema.module.parameters()) and not model.ema_nhwc
    with torch.inference_mode():  # as Lightning evaluates: the weights stay tensors the EMA update and autograd use
        model.generate(range(2), seed=1)
    assert not any(p.is_inference() for p in model.net_ema.module.parameters())


def test_samples_do_not_depend_on_the_batch_and_guidance_mixes_predictions():
    model = Flow((1, 8, 8), tiny_unet(), num_classes=3, conditional=True, guidance=2.0, steps=2)
    whole = model.generate(range(5), seed=1)
    torch.testing.assert_close(torch.cat([model.generate([0, 1], seed=1), model.generate([2, 3, 4], seed=1)]), whole)
    net = stub(lambda x, c, labels: labels.float().view(-1, 1, 1, 1) * torch.ones_like(x))
    guided = Flow((1, 2, 2), net, num_classes=3, conditional=True, guidance=3.0)
    out = guided.predict(guided.net, torch.zeros(2, 1, 2, 2), torch.tensor([0.5]), torch.tensor([1, 2]))
    # u (the null label, 3) + 3 (c - u): 3 + 3 (1 - 3) = -3 and 3 + 3 (2 - 3) = 0
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([-3.0, 0.0]))


def test_ema_follows_edms_half_life_with_ramp_up():
    model = Flow((2,), stub(lambda x, c, labels: x), ema_halflife_kimg=0.5, ema_rampup_ratio=0.05)
    model.net_ema.update(model.net, 936)
    assert model.net_ema.decay(64) == pytest.approx(0.5 ** (64 / 50))  # 1,000 seen: min(500, 0.05 x 1000 = 50)
    model.net_ema.update(model.net, 98_936)
    assert model.net_ema.decay(64) == pytest.approx(0.5 ** (64 / 500))  # 100k seen: min(500, 5000) = 500
    assert float(model.net_ema.images_seen) == 99_872


def test_adam_is_fused_unless_the_gradients_are_clipped():
    """One kernel for all parameters (as the adversarial models'); Lightning cannot unscale a fused optimizer's
    16-mixed gradients before clipping, so a clipped model's Adam is the unfused one."""
    for make in (Flow, Diffusion):
        assert make((1, 8, 8), tiny_unet()).configure_optimizers().defaults["fused"] is True
        clipped = make((1, 8, 8), tiny_unet(), grad_clip=1.0).configure_optimizers()
        assert not clipped.defaults["fused"]
        assert clipped.defaults["lr"] == 1e-3 and clipped.defaults["betas"] == (0.9, 0.999)


@pytest.mark.parametrize(("saved_clip", "resumed_clip"), [(None, 1.0), (1.0, None)])
def test_a_resumed_run_steps_with_the_adam_it_built(saved_clip, resumed_clip):
    """Optimizer.load_state_dict restores the saved param groups' `fused` flag; a resumed run takes its own."""
    from gdm.models.base import GenerativeModule

    saved = Flow((1, 8, 8), tiny_unet(), grad_clip=saved_clip)
    optimizer = saved.configure_optimizers()
    saved.loss(torch.randn(4, 1, 8, 8), None).mean().backward()
    optimizer.step()
    resumed = Flow((1, 8, 8), tiny_unet(), grad_clip=resumed_clip)
    resumed.load_state_dict(saved.state_dict())
    built = resumed.configure_optimizers()
    built.load_state_dict(optimizer.state_dict())
    assert bool(built.param_groups[0]["fused"]) == (saved_clip is None)  # what load_state_dict leaves
    GenerativeModule.match_fused([built])
    assert bool(built.param_groups[0]["fused"]) == (resumed_clip is None)
    resumed.loss(torch.randn(4, 1, 8, 8), None).mean().backward()
    built.step()  # steps with the restored moments either way
    assert all(float(s["step"]) == 2 for s in built.state.values())


def test_a_diffusion_models_sampler_steps_and_guidance_change_together():
    model = Diffusion((2,), stub(lambda x, c, labels: x), num_classes=3, conditional=True)
    model.set_sampling("dpmpp_2m", None, guidance=2.0)  # task=sample / eval pass all three
    assert (model.sampler_name, model.steps, model.nfe(), model.guidance) == ("dpmpp_2m", 16, 16, 2.0)
    model.set_sampling("heun", None)
    assert (model.steps, model.nfe()) == (18, 35)


def test_label_dropout_uses_the_null_label():
    model = Flow((2,), stub(lambda x, c, labels: x), num_classes=4, conditional=True, label_dropout=0.5)
    torch.manual_seed(0)
    labels = model.training_labels({"label": torch.zeros(4000, dtype=torch.long)})
    assert set(labels.tolist()) == {0, 4} and float((labels == 4).float().mean()) == pytest.approx(0.5, abs=0.03)


# ---- likelihood ------------------------------------------------------------------------------

def gaussian_velocity(mean: torch.Tensor, std: float):
    """The exact rectified-flow velocity E[x1 - x0 | x_t = x] for data N(mean, std^2 I) and noise N(0, I)."""
    def fn(x, c_noise, labels):
        t = (c_noise / 1000).view(-1, *[1] * (x.dim() - 1))
        var = t**2 * std**2 + (1 - t) ** 2
        return mean + (t * std**2 - (1 - t)) / var * (x - t * mean)
    return fn


def gaussian_log_prob(x, mean, std):
    d = x[0].numel()
    return -0.5 * ((x - mean) / std).pow(2).flatten(1).sum(1) - d * math.log(std * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("dims", [2, 100])  # exact divergence, Hutchinson's estimate
def test_flow_likelihood_equals_the_analytic_gaussian(dims):
    mean, std = torch.linspace(-1, 1, dims), 0.6
    model = Flow((dims,), stub(gaussian_velocity(mean, std)))
    g = torch.Generator().manual_seed(0)
    x = mean + std * torch.randn(64, dims, generator=g)
    ours = model.log_likelihood(x, generator=g)
    expected = gaussian_log_prob(x, mean, std)
    if dims == 2:
        torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-3)
    else:  # unbiased per image, with spread: the mean over 64 images within 1% of the value per dimension
        assert float(ours.mean()) == pytest.approx(float(expected.mean()), abs=0.01 * dims)


def test_the_likelihood_solves_at_the_given_tolerance_and_records_it():
    mean, std = torch.linspace(-1, 1, 2), 0.6
    x = mean + std * torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    expected = gaussian_log_prob(x, mean, std)
    errors = {}
    for tol in (1e-2, 1e-6):
        model = Flow((2,), stub(gaussian_velocity(mean, std)), nll_tolerance=tol)
        assert (model.test_protocol()["estimator"]["atol"], model.test_protocol()["estimator"]["rtol"]) == (tol, tol)
        errors[tol] = float((model.log_likelihood(x) - expected).abs().max())
    assert errors[1e-6] < 1e-4 and errors[1e-6] < errors[1e-2]  # the tolerance reaches the solver


@pytest.mark.parametrize("make", [Flow, Diffusion])
def test_the_likelihood_runs_in_float32_under_mixed_precision(make):
    """Lightning tests under bf16-mixed's autocast: the likelihood's ODE leaves it, so test/nll_bpd is float32's
    (bfloat16's rounding in the net would otherwise be the solver's error); bf16-true's weights are recorded."""
    torch.manual_seed(0)
    model = make((2, 8, 8), tiny_unet(), nll_tolerance=1e-2)  # 128 dimensions: Hutchinson's estimate
    with torch.no_grad():  # off the zero-initialized output layer: a net whose velocity is not 0
        for p in model.net_ema.module.parameters():
            p.normal_(0, 0.2)
    x = torch.rand(4, 2, 8, 8) * 2 - 1
    plain = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.log_likelihood(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mixed, plain, rtol=1e-6, atol=1e-6)
    assert "net_dtype" not in model.test_protocol()["estimator"]  # float32: protocol ids as before
    model.net_ema.module.to(torch.bfloat16)
    assert model.test_protocol()["estimator"]["net_dtype"] == "bfloat16"


def test_edm_probability_flow_likelihood_equals_the_analytic_gaussian():
    model = Diffusion((2,), stub(lambda x, c, labels: x))
    # centred data: the likelihood takes x(sigma_max) ~ N(0, sigma_max^2 I), which is off by 2 mean x / sigma_max^2
    # per dimension (0.01 nats for a mean of 0.3) for data that is not
    mean, std = torch.zeros(2), 0.4
    exact = gaussian_denoiser(mean, std)
    model.edm.denoise = lambda predict, x, sigma: exact(x, sigma)
    x = mean + std * torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    expected = gaussian_log_prob(x, mean, math.sqrt(std**2 + 0.002**2))
    torch.testing.assert_close(model.log_likelihood(x), expected, rtol=2e-3, atol=2e-3)
    # solved in ln sigma (the same density), as the protocol says; the flow in its own t
    assert model.test_protocol()["estimator"]["ode_time"] == "ln sigma"
    assert Flow((2,), stub(lambda x, c, labels: x)).test_protocol()["estimator"]["ode_time"] == "t"


def test_the_printed_protocol_names_the_likelihoods_estimator_and_tolerance():
    from gdm.evaluation.context import describe

    line = describe(Flow((2,), stub(lambda x, c, labels: x), nll_tolerance=1e-3).test_protocol())
    assert line.startswith("estimator instantaneous change of variables (probability-flow ODE), dopri5 atol 0.001 "
                           "rtol 0.001 [protocol ")


# ---- short trainings on a toy distribution ----------------------------------------------------

def toy_data(n: int, generator: torch.Generator) -> torch.Tensor:
    """A correlated 2-D Gaussian: mean (0.5, -0.3), covariance [[0.25, 0.1], [0.1, 0.09]]."""
    chol = torch.linalg.cholesky(torch.tensor([[0.25, 0.1], [0.1, 0.09]]))
    return torch.tensor([0.5, -0.3]) + torch.randn(n, 2, generator=generator) @ chol.T


def train_toy(model, steps: int = 600) -> torch.Tensor:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.net.parameters(), lr=2e-3)
    for _ in range(steps):
        x = toy_data(256, g)
        loss = model.loss(x, None).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.net_ema.update(model.net, 256)
    return model.generate(range(4000), seed=0)


@pytest.mark.slow  # trains (about 20 s on 2 cores)
@pytest.mark.parametrize("make", [
    lambda: Flow((2,), partial(TimeMLP, width=64, depth=2), sampler="heun", steps=16),
    lambda: Flow((2,), partial(TimeMLP, width=64, depth=2), sampler="euler", steps=32, ot_pairing=True),
    lambda: Diffusion((2,), partial(TimeMLP, width=64, depth=2), sigma_data=0.5, steps=18),
], ids=["flow-heun", "ot-cfm-euler", "edm-heun"])
def test_a_short_training_matches_the_toy_distributions_moments(make):
    samples = train_toy(make())
    torch.testing.assert_close(samples.mean(0), torch.tensor([0.5, -0.3]), atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), torch.tensor([[0.25, 0.1], [0.1, 0.09]]), atol=0.04, rtol=0)


# ---- options ---------------------------------------------------------------------------------

def test_another_sampler_without_steps_takes_its_own_default_steps():
    net = stub(lambda x, c, labels: x)
    ddpm = Diffusion((2,), net, formulation="ddpm")
    assert (ddpm.sampler_name, ddpm.steps) == ("ancestral", 1000)
    ddpm.set_sampling("ddim")
    assert ddpm.steps == 50  # DDIM's default, not the ancestral sampler's 1000
    ddpm.set_sampling("ancestral", steps=20)
    assert ddpm.steps == 20
    small = Diffusion((2,), net, formulation="ddpm", sampler="ddim", train_timesteps=10)
    assert small.steps == 10  # at most the training steps
    flow = Flow((2,), net, sampler="heun", steps=4)
    flow.set_sampling("euler")
    assert flow.steps == 4  # a flow solver's steps mean the same for every solver


def test_bad_options_say_which_and_why():
    net = stub(lambda x, c, labels: x)
    with pytest.raises(GdmError, match="sampler=ddim belongs to the other formulation"):
        Diffusion((2,), net, sampler="ddim")
    with pytest.raises(GdmError, match="guidance=2.0 .* unconditional"):
        Flow((2,), net, guidance=2.0)
    with pytest.raises(GdmError, match="guidance=2.0 mixes in the prediction for the null label, which "
                                       "label_dropout=0 never trains"):
        Flow((2,), net, num_classes=3, conditional=True, label_dropout=0.0, guidance=2.0)
    with pytest.raises(GdmError, match="conditional=true needs labelled data"):
        Flow((2,), net, conditional=True)
    with pytest.raises(ValidationError, match="steps"):
        Flow((2,), net, steps=0)
    with pytest.raises(ValidationError, match="sampler"):
        Flow((2,), net, sampler="rk45")
    with pytest.raises(ValidationError, match="u_shape"):  # exp(a) overflows float32 above 88
        Flow((2,), net, time_sampling="u_shaped", u_shape=100.0)
    model = Flow((2,), net)
    with pytest.raises(GdmError, match="sampler=ancestral is not a sampler of Flow: choose one of euler"):
        model.set_sampling("ancestral")
    # on a trained model (task=eval / sample) the advice is about sampling, not about how to train
    with pytest.raises(GdmError, match=r"and this model was trained unconditional: drop guidance=2.0 \(1, the model "
                                       r"alone, is its only value\), or guide a model trained with labels"):
        model.set_sampling(guidance=2.0)
    no_null = Flow((2,), net, num_classes=3, conditional=True, label_dropout=0.0)
    with pytest.raises(GdmError, match="which label_dropout=0 never trained: drop guidance=3.0"):
        no_null.set_sampling(guidance=3.0)
    with pytest.raises(GdmError, match="steps=0 must be an integer >= 1"):
        model.set_sampling(steps=0)
    with pytest.raises(GdmError, match="steps=2000 is more than the 1000 training steps"):
        Diffusion((2,), net, formulation="ddpm", steps=2000)
    with pytest.raises(GdmError, match="multiples of 8"):
        UNet((1, 12, 12), channel_mult=(1, 2, 2), patch_size=2)


def test_val_loss_protocols_name_the_model_that_defines_the_loss():
    from types import SimpleNamespace

    from gdm.evaluation.evaluator import Evaluator

    net = stub(lambda x, c, labels: x)
    ids = {Evaluator.validation_protocol(None, "val/loss", SimpleNamespace(lightning_module=m), 10)["id"]
           for m in (Flow((2,), net), Diffusion((2,), net), Diffusion((2,), net, formulation="ddpm"))}
    assert len(ids) == 3  # three different losses are never one column of task=compare


@pytest.mark.parametrize("formulation, key, value", [
    ("edm", "c_noise_scale", 1.0), ("edm", "sigma_data", 0.75), ("edm", "formulation", "ddpm"),
    ("ddpm", "formulation", "edm"), ("ddpm", "beta_schedule", "cosine"), ("ddpm", "train_timesteps", 500)])
def test_resuming_or_evaluating_with_another_preconditioning_or_schedule_is_refused(formulation, key, value):
    """EDM's c_noise_scale and sigma_data, the formulation and DDPM's schedule define what the weights compute: a
    resumed run may not change them, nor may task=eval (other settings, e.g. the learning rate, they may)."""
    from gdm.checkpoints import changed_settings, check_trained_settings

    net = stub(lambda x, c, labels: x)
    sampler = {"edm": "heun", "ddpm": "ancestral"}
    saved = {"hyper_parameters": dict(Diffusion((2,), net, formulation=formulation).hparams)}
    other = {"formulation": formulation, key: value}
    changed = Diffusion((2,), net, **other, sampler=sampler[other["formulation"]], steps=100)
    old = saved["hyper_parameters"][key]
    with pytest.raises(GdmError) as err:
        changed_settings(changed, saved, "last.ckpt")
    assert str(err.value) == (f"ckpt_path=last.ckpt holds weights trained with other settings than this run's "
                              f"(model.{key}={value}, the checkpoint's is {old}): resume with the checkpoint's "
                              "values, or start a new run.")
    with pytest.raises(GdmError, match=r"^ckpt_path=last.ckpt holds weights trained for other settings than this "
                                       rf"run's \(model\.{key} gives {key}="):
        check_trained_settings(changed, saved, "last.ckpt")
    lr = Diffusion((2,), net, formulation=formulation, lr=2e-3)
    assert changed_settings(lr, saved, "last.ckpt") == ["lr: 0.001 -> 0.002"]


@pytest.mark.parametrize("sampler", ["dopri5", "unipc"])
def test_a_sigterm_stops_sampling_and_the_likelihood_at_the_next_net_call(sampler):
    """A preempted run's dopri5 solve of minutes stops at its next net evaluation (Lightning's SIGTERMException,
    which writes the on-exception checkpoint), not when the solve ends."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class Trainer:  # what Lightning's signal handler sets on SIGTERM
        received_sigterm = False

    trainer, calls = Trainer(), []

    def velocity(x, t, labels):
        calls.append(1)
        if len(calls) == 3:
            trainer.received_sigterm = True
        return -x

    model = Flow((3,), stub(velocity), sampler=sampler, steps=8)
    model._trainer = trainer
    with pytest.raises(SIGTERMException):
        model.generate(range(4))
    assert len(calls) == 3  # none after the signal
    with pytest.raises(SIGTERMException):
        model.log_likelihood(torch.zeros(2, 3))
    assert len(calls) == 3
    trainer.received_sigterm = False
    assert model.generate(range(4)).shape == (4, 3)  # runs on without the signal


@pytest.mark.parametrize(("steps", "said"), [(5, "eval.steps=5"), ([5], r"eval.steps=\[5\]")])
def test_steps_given_to_an_adaptive_solver_are_refused_as_typed(steps, said):
    from gdm.tasks.options import check_steps_apply

    model = Flow((3,), stub(lambda x, t, labels: -x), sampler="dopri5", steps=8)
    with pytest.raises(GdmError, match=rf"^{said} has no effect: sampler dopri5 chooses its own steps"):
        check_steps_apply(model, "eval.steps", steps)
    check_steps_apply(model, "eval.steps", None)  # none given: nothing to refuse
    model.set_sampling("heun", 4)
    check_steps_apply(model, "eval.steps", steps)  # a fixed-step sampler takes them
