"""Diffusion models in two formulations, chosen by `formulation`:

- `edm` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"; NVlabs/edm): the
  denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) with sigma_data = 0.5, c_noise = ln(sigma) / 4 times
  `c_noise_scale` (250 by default: the net's sinusoidal embedding, DDPM's, resolves inputs on the scale of DDPM's
  0-999 steps, as the flow's 1000 t, and 250 ln(sigma) / 4 spans about 660 over the sampler's sigma in [0.002, 80];
  EDM's own ln(sigma) / 4 spans 2.7, where only the embedding's fastest frequencies vary), noise levels
  ln sigma ~ N(P_mean = -1.2, P_std = 1.2), the loss weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, and
  the deterministic Heun sampler on the rho = 7 grid from sigma_max = 80 to sigma_min = 0.002 (then 0):
  NFE = 2 steps - 1 (18 steps, NFE 35, in the paper); `euler` takes the first-order steps only (NFE = steps);
  `dpmpp_2m` is DPM-Solver++(2M) (Lu et al. 2022, the multistep second-order solver of the data prediction) on the
  same grid, by diffusers' EDMDPMSolverMultistepScheduler: one net call per step (NFE = steps), second order from
  the second step on, first order on the last (to sigma = 0); `unipc` is UniPC (Zhao et al. 2023) by diffusers'
  UniPCMultistepScheduler on the rectified-flow path x / (1 + sigma), on a grid uniform in sigma / (1 + sigma) from
  sigma_max to 0 (`gdm.models.multistep`; NFE = steps).
- `ddpm` (Ho et al. 2020): epsilon prediction on 1,000 discrete steps of a linear (beta 1e-4 to 0.02) or cosine
  (Nichol & Dhariwal 2021) schedule, uniform training steps and the plain MSE; sampled by diffusers' schedulers:
  `ancestral` (DDPMScheduler, Ho et al.'s sampler, sigma_t^2 = beta-tilde_t, x0 clipped to [-1, 1]), `ddim`
  (DDIMScheduler, Song et al. 2021, eta = 0), `dpmpp_2m` (DPMSolverMultistepScheduler, DPM-Solver++(2M)) or
  `unipc` (UniPCMultistepScheduler, UniPC-2 with the bh2 corrector, Zhao et al. 2023), over
  `steps` of the 1,000 spaced as "trailing" (Lin et al. 2024: the first step starts at the last training step, which
  a few-step sampler needs). NFE = steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.models.ema import HalfLife, RampUp
from gdm.models.iterative import (
    Autoencoder,
    Guidance,
    IterativeModel,
    LabelDropout,
    NetFactory,
    ProbabilityFlow,
    Steps,
    index_generators,
    mean_flat,
    mse,
)
from gdm.models.latent import LatentSpace
from gdm.models.multistep import SOLVER_ORDER, SOLVER_TYPE, unipc
from gdm.option_types import AdamBetas, Flag, GradClip, LearningRate, NLLTolerance, NonNegativeInt, Visuals, checked

Positive = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]

log = logging.getLogger(__name__)

SAMPLERS = {"edm": ("heun", "euler", "dpmpp_2m", "unipc"), "ddpm": ("ancestral", "ddim", "dpmpp_2m", "unipc")}


class EDM:
    """The EDM formulation's preconditioning, loss and noise grid (Karras et al. 2022, Table 1)."""

    def __init__(self, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, c_noise_scale: float = 1.0):
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.c_noise_scale = c_noise_scale

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_skip, c_out, c_in, c_noise of noise levels `sigma` (N,) (each (N,)); c_noise = ln(sigma) / 4 times
        `c_noise_scale` (1: Table 1's)."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma**2).sqrt()
        return c_skip, c_out, c_in, self.c_noise_scale * sigma.log() / 4

    def denoise(self, predict, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise); `predict(x, c_noise)` is the (guided) net F."""
        sigma = sigma.reshape(-1).expand(x.shape[0]).to(torch.float32)
        c_skip, c_out, c_in, c_noise = (c.view(-1, *[1] * (x.dim() - 1)) for c in self.preconditioning(sigma))
        return c_skip * x + c_out * predict(c_in * x, c_noise.reshape(-1))

    def loss_weight(self, sigma: Tensor) -> Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def training_sigma(self, n: int, device, generator: torch.Generator | None = None) -> Tensor:
        """ln sigma ~ N(P_mean, P_std^2): (n,) noise levels."""
        return (torch.randn(n, device=device, generator=generator) * self.p_std + self.p_mean).exp()

    def sigmas(self, steps: int) -> Tensor:
        """The sampler's noise levels (steps + 1,): sigma_i = (sigma_max^(1/rho) + i / (steps - 1)
        (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for i < steps, then 0 (one step: sigma_max, then 0)."""
        if steps == 1:
            return torch.tensor([self.sigma_max, 0.0], dtype=torch.float64)
        i = torch.arange(steps, dtype=torch.float64)
        inv = 1 / self.rho
        grid = (self.sigma_max**inv + i / (steps - 1) * (self.sigma_min**inv - self.sigma_max**inv)) ** self.rho
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])

    def flow_grid(self, steps: int) -> Tensor:
        """UniPC's grid (steps,) on the rectified-flow path (`gdm.models.multistep`), s = sigma / (1 + sigma):
        uniform from sigma_max's s down to 0 (the 0 not included), as a flow's uniform time grid; at 4-8 steps it
        beats the rho grid here (experiments/diffusion_flow.md, seventh pass)."""
        s_max = self.sigma_max / (1 + self.sigma_max)
        return torch.linspace(s_max, 0, steps + 1, dtype=torch.float64)[:-1]

    def sample(self, denoise, noise: Tensor, steps: int, heun: bool) -> Tensor:
        """EDM's deterministic sampler (Algorithm 1, S_churn = 0; edm/generate.py `edm_sampler`): x_0 = noise
        sigma_0, Euler steps along dx/dsigma = (x - D(x; sigma)) / sigma, with Heun's correction except on the last
        step (to sigma = 0). `denoise(x, sigma)` is D."""
        t = self.sigmas(steps)
        x = noise.to(torch.float64) * t[0]
        for i in range(steps):
            t_cur, t_next = t[i], t[i + 1]
            d_cur = (x - denoise(x.float(), t_cur).to(torch.float64)) / t_cur
            x_next = x + (t_next - t_cur) * d_cur
            if heun and i < steps - 1:
                d_prime = (x_next - denoise(x_next.float(), t_next).to(torch.float64)) / t_next
                x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
            x = x_next
        return x.float()


class Diffusion(IterativeModel):
    """A diffusion model of `formulation` edm or ddpm (see the module docstring) over images (N, C, H, W) in
    [-1, 1]. Options are checked on construction (pydantic's ValidationError naming the parameter; GdmError for a
    sampler of the other formulation, guidance without conditioning, or labels the data lacks)."""

    @checked
    def __init__(
        self,
        image_shape: tuple[int, ...],
        net: NetFactory,
        num_classes: int | None = None,
        formulation: Annotated[Literal["edm", "ddpm"], Field(
            description="edm: Karras et al. 2022; ddpm: Ho et al. 2020")] = "edm",
        sampler: Annotated[str | None, Field(description=(
            "edm: heun (EDM's) | euler | dpmpp_2m | unipc; ddpm: ancestral (DDPM's) | ddim | dpmpp_2m | unipc; null: "
            "the formulation's first"))] = None,
        steps: Annotated[Steps | None, Field(description=(
            "sampler steps; null: 18 for heun (NFE 35, EDM's CIFAR-10) and euler, 16 for dpmpp_2m, 10 for unipc, "
            "1000 for ancestral, 50 for ddim"))] = None,
        sigma_data: Annotated[Positive, Field(description="EDM's data std, 0.5 in EDM")] = 0.5,
        p_mean: Annotated[Real, Field(description="EDM's training ln-sigma mean, -1.2 in EDM")] = -1.2,
        p_std: Annotated[Positive, Field(description="EDM's training ln-sigma std, 1.2 in EDM")] = 1.2,
        sigma_min: Annotated[Positive, Field(description="EDM sampler's lowest sigma, 0.002 in EDM")] = 0.002,
        sigma_max: Annotated[Positive, Field(description="EDM sampler's highest sigma, 80 in EDM")] = 80.0,
        rho: Annotated[Positive, Field(description="EDM sampler's grid exponent, 7 in EDM")] = 7.0,
        c_noise_scale: Annotated[Positive, Field(description=(
            "the net sees EDM's c_noise = ln(sigma) / 4 times this; 1 in EDM, 250 here: on the scale of DDPM's "
            "steps, which the U-Net's sinusoidal embedding resolves"))] = 250.0,
        beta_schedule: Annotated[Literal["linear", "cosine"], Field(
            description="DDPM's betas: linear 1e-4..0.02 (Ho et al.) | cosine (Nichol & Dhariwal 2021)")] = "linear",
        train_timesteps: Annotated[Steps, Field(description="DDPM's diffusion steps, 1000 in Ho et al.")] = 1000,
        conditional: Flag = False,
        label_dropout: LabelDropout = 0.1,
        guidance: Guidance = 1.0,
        lr: LearningRate = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        lr_warmup_steps: Annotated[NonNegativeInt, Field(description="batches of linear learning-rate warm-up")] = 0,
        grad_clip: GradClip = None,
        ema_halflife_kimg: HalfLife = 500.0,
        ema_rampup_ratio: RampUp = 0.05,
        nll_tolerance: NLLTolerance = 1e-5,
        num_visuals: Visuals = 64,
        visual_seed: NonNegativeInt = 1234,
        autoencoder: Autoencoder = None,
        latent_net: NetFactory | None = None,
        latent: LatentSpace | None = None,
    ):
        # before the base's constructor, which checks the sampler and steps against them
        self.formulation, self.train_timesteps, self.beta_schedule = formulation, train_timesteps, beta_schedule
        self.samplers = SAMPLERS[formulation]
        sampler = sampler or self.samplers[0]
        if sampler in SAMPLERS["edm" if formulation == "ddpm" else "ddpm"] and sampler not in self.samplers:
            raise GdmError(f"sampler={sampler} belongs to the other formulation, and formulation={formulation} "
                           f"samples with {' or '.join(self.samplers)}: pick one of those (a data's config in "
                           "conf/data_model/ may have picked the sampler), or the formulation.")
        super().__init__(image_shape, net, num_classes, conditional, label_dropout, guidance, sampler,
                         steps or self.default_steps(sampler), lr, betas, lr_warmup_steps, grad_clip,
                         ema_halflife_kimg, ema_rampup_ratio, num_visuals, visual_seed, autoencoder=autoencoder,
                         latent_net=latent_net, latent=latent, nll_tolerance=nll_tolerance)
        self.save_hyperparameters(ignore=["net", "latent_net", "latent"])
        self.edm = EDM(sigma_data, p_mean, p_std, sigma_min, sigma_max, rho, c_noise_scale)
        if latent is not None and formulation == "edm" and sigma_data != 1.0:
            log.warning(f"sigma_data={sigma_data} is the std EDM's preconditioning assumes, and a latent model's codes "
                        "are scaled to std 1: set sigma_data=1.0.")
        if formulation == "ddpm":
            self.register_buffer("alphas_cumprod", self.ddpm_scheduler("ancestral").alphas_cumprod.float(),
                                 persistent=False)

    def default_steps(self, sampler: str) -> int:
        """EDM's 18 steps for heun and euler (its CIFAR-10 setting), DPM-Solver++(2M) 16 (within the 15-20 steps
        Lu et al. 2022 find enough for it; experiments/diffusion_flow.md, fourth pass, on the digits), UniPC 10 (the
        top of the 5-10 NFE Zhao et al. 2023 evaluate it at), DDPM's ancestral sampler its training steps, DDIM 50
        (Song et al. 2021; at most the training steps)."""
        return {"ancestral": self.train_timesteps, "ddim": min(50, self.train_timesteps),
                "dpmpp_2m": 16, "unipc": 10}.get(sampler, 18)

    def formulation_words(self) -> str:
        return f" with formulation={self.formulation}"

    def ddpm_scheduler(self, sampler: str):
        """diffusers' scheduler of the DDPM schedule for `sampler` (ancestral: DDPMScheduler, ddim: DDIMScheduler,
        dpmpp_2m: DPMSolverMultistepScheduler, DPM-Solver++(2M) of the data prediction, Lu et al. 2022)."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

        options = {"num_train_timesteps": self.train_timesteps, "beta_start": 1e-4, "beta_end": 0.02,
                   "beta_schedule": "linear" if self.beta_schedule == "linear" else "squaredcos_cap_v2",
                   "prediction_type": "epsilon", "timestep_spacing": "trailing"}
        if sampler == "dpmpp_2m":
            return DPMSolverMultistepScheduler(**options, algorithm_type="dpmsolver++", solver_order=2)
        if sampler == "unipc":
            return UniPCMultistepScheduler(**options, solver_order=SOLVER_ORDER, solver_type=SOLVER_TYPE)
        return (DDPMScheduler if sampler == "ancestral" else DDIMScheduler)(**options, clip_sample=True)

    def edm_dpm_solver(self):
        """diffusers' DPM-Solver++(2M) on EDM's grid (rho, sigma_min, sigma_max, then 0) with this model's
        sigma_data; its preconditioning of the net's output is EDM's (Table 1: prediction_type "epsilon")."""
        from diffusers import EDMDPMSolverMultistepScheduler  # a heavy import: only when this sampler is used

        edm = self.edm
        return EDMDPMSolverMultistepScheduler(sigma_min=edm.sigma_min, sigma_max=edm.sigma_max,
                                              sigma_data=edm.sigma_data, rho=edm.rho, sigma_schedule="karras",
                                              prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++",
                                              final_sigmas_type="zero")

    # ---- training -------------------------------------------------------------------------

    def loss(self, x: Tensor, labels: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """EDM: weight(sigma) |D(x + n; sigma) - x|^2 with n ~ N(0, sigma^2 I); DDPM: |eps_theta(x_t, t) - eps|^2
        with x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, t uniform over the training steps. Per sample (N,),
        the mean over its elements."""
        n = x.shape[0]
        noise = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        if self.formulation == "edm":
            sigma = self.edm.training_sigma(n, x.device, generator)
            sigma_b = sigma.view(-1, *[1] * (x.dim() - 1))
            denoised = self.edm.denoise(lambda y, c: self.run_net(self.net, y, c, labels), x + sigma_b * noise, sigma)
            return self.edm.loss_weight(sigma) * mean_flat((denoised.float() - x.float()) ** 2)
        t = torch.randint(0, self.train_timesteps, (n,), device=x.device, generator=generator)
        abar = self.alphas_cumprod[t].view(-1, *[1] * (x.dim() - 1))
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        return mse(self.run_net(self.net, x_t, t.float(), labels), noise)

    # ---- sampling -------------------------------------------------------------------------

    def nfe(self) -> int:
        return 2 * self.steps - 1 if self.sampler_name == "heun" else self.steps

    def set_sampling(self, sampler: str | None = None, steps: int | None = None,
                     guidance: float | None = None) -> None:
        super().set_sampling(sampler, steps, guidance)
        if self.sampler_name == "dpmpp_2m":  # diffusers imported now, not inside a timed sampling
            from diffusers import DPMSolverMultistepScheduler, EDMDPMSolverMultistepScheduler  # noqa: F401
        if self.formulation == "ddpm" and self.steps > self.train_timesteps:
            raise GdmError(f"steps={self.steps} is more than the {self.train_timesteps} training steps of DDPM: "
                           "use at most that many.")

    def solve(self, net: nn.Module, noise: Tensor, labels: Tensor | None, indices: Sequence[int],
              seed: int) -> Tensor:
        if self.formulation == "edm" and self.sampler_name == "dpmpp_2m":
            scheduler = self.edm_dpm_solver()
            scheduler.set_timesteps(self.steps)
            x = noise * scheduler.sigmas[0]
            for t, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1], strict=True):
                _, _, c_in, c_noise = self.edm.preconditioning(sigma.reshape(1).to(x.device))
                # the (guided) net F; the scheduler forms D = c_skip x + c_out F as Table 1 does
                x = scheduler.step(self.predict(net, c_in * x, c_noise, labels), t, x).prev_sample
            return x
        if self.formulation == "edm" and self.sampler_name == "unipc":
            s = self.edm.flow_grid(self.steps)
            return unipc(lambda x, s: self.edm_flow_prediction(net, labels, x, s), noise * s[0], s)
        if self.formulation == "edm":
            return self.edm.sample(lambda x, sigma: self.edm.denoise(
                lambda y, c: self.predict(net, y, c, labels), x, sigma), noise, self.steps, self.sampler_name == "heun")
        scheduler = self.ddpm_scheduler(self.sampler_name)
        scheduler.set_timesteps(self.steps)
        generators = index_generators(indices, seed, stream=2) if self.sampler_name == "ancestral" else None
        x = noise
        for t in scheduler.timesteps:
            eps = self.predict(net, x, torch.full((1,), float(t), device=x.device), labels)
            if generators is not None:  # diffusers draws the step's noise for sample i from generator i
                x = scheduler.step(eps, int(t), x, generator=generators).prev_sample
            elif self.sampler_name == "ddim":
                x = scheduler.step(eps, int(t), x, eta=0.0).prev_sample
            else:
                x = scheduler.step(eps, t, x).prev_sample
        return x

    def edm_flow_prediction(self, net: nn.Module, labels: Tensor | None, x: Tensor, s: Tensor) -> Tensor:
        """EDM's denoiser read on the rectified-flow path (`gdm.models.multistep`): at x = x_edm / (1 + sigma),
        s = sigma / (1 + sigma), the noise - data prediction (x - D(x_edm; sigma)) / s."""
        sigma = s / (1 - s)
        return (x - self.edm.denoise(lambda y, c: self.predict(net, y, c, labels), x * (1 + sigma), sigma)) / s

    def probability_flow(self, net: nn.Module, labels: Tensor | None) -> ProbabilityFlow | None:
        """EDM's probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, from sigma_min (the data, up to that
        noise) to sigma_max, where x ~ N(0, sigma_max^2 I), written in s = ln sigma: dx/ds = x - D(x; e^s). The same
        path and density (a change of the time variable), which dopri5 crosses in fewer steps at a given tolerance
        (experiments/diffusion_flow.md, third pass). None for DDPM (its discrete steps have no ODE here)."""
        if self.formulation != "edm":
            return None

        def velocity(s: Tensor, x: Tensor) -> Tensor:
            return x - self.edm.denoise(lambda y, c: self.predict(net, y, c, labels), x, s.exp())

        return ProbabilityFlow(velocity, t_data=math.log(self.edm.sigma_min), t_noise=math.log(self.edm.sigma_max),
                               noise_std=self.edm.sigma_max, time="ln sigma")

    def sampling_protocol(self) -> dict:
        protocol = {"formulation": self.formulation, **super().sampling_protocol()}
        if self.formulation == "edm" and self.sampler_name == "unipc":
            protocol.update(sigma_max=self.edm.sigma_max, grid="uniform in sigma / (1 + sigma)")
        elif self.formulation == "edm":
            protocol.update(sigma_min=self.edm.sigma_min, sigma_max=self.edm.sigma_max, rho=self.edm.rho)
        else:
            protocol.update(beta_schedule=self.beta_schedule, timestep_spacing="trailing")
        return protocol

