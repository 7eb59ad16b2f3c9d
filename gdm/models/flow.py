"""Flow matching (Lipman et al. 2023) on the linear path of rectified flow (Liu et al. 2023): x_t = t x_1 + (1 - t)
x_0 from noise x_0 ~ N(0, I) at t = 0 to data x_1 at t = 1, the net regressing the velocity x_1 - x_0.

- Training times: `uniform` on [0, 1], `logit_normal` (t = sigmoid(m + s n), n ~ N(0, 1); m = 0, s = 1 in
  Esser et al. 2024, which weights the middle of the path), or `u_shaped` (Lee et al. 2024, "Improving the Training of
  Rectified Flows": t or 1 - t, even odds, with t of density proportional to exp(a t) on [0, 1], a = 4 as in their
  code's t_dist.py; both ends weighted, where a few-step sampler of a reflow evaluates the net).
- `ot_pairing`: minibatch optimal transport (Tong et al. 2023's OT-CFM, Pooladian et al. 2023): each batch's noise is
  re-paired with its images by the exact assignment of least total squared distance (scipy's
  linear_sum_assignment: for equal batches with uniform weights, what torchcfm's exact OT plan gives).
- Sampling integrates dx/dt = v(x, t) from t = 0 to 1 with torchdiffeq (Chen et al. 2018): `euler` (NFE = steps),
  `midpoint` and `heun` (torchdiffeq's heun2; NFE = 2 steps), or the adaptive `dopri5` (tolerances `atol`, `rtol`;
  `steps` unused, the NFE measured); or with `unipc`, UniPC (Zhao et al. 2023; diffusers' UniPCMultistepScheduler,
  `gdm.models.multistep`), a multistep second-order solver of the data prediction x_1 = x_t + (1 - t) v on even
  steps (NFE = steps).
- Likelihood: `test/nll_bpd` by the instantaneous change of variables (Chen et al. 2018; FFJORD, Grathwohl et al.
  2019), see `gdm.models.iterative.IterativeModel.log_likelihood`.
- Reflow (`teacher`, Liu et al. 2023): train on a trained flow's (noise, sample) pairs instead of independent ones,
  starting from its weights, for straighter paths that a few Euler steps follow (`gdm.models.reflow`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from scipy.optimize import linear_sum_assignment
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
    mse,
)
from gdm.models.latent import LatentSpace
from gdm.models.multistep import unipc
from gdm.models.reflow import Couplings
from gdm.option_types import (
    AdamBetas,
    Count,
    Flag,
    GradClip,
    LearningRate,
    NLLTolerance,
    NonNegativeInt,
    Visuals,
    checked,
)

Tolerance = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Sampler = Literal["euler", "midpoint", "heun", "dopri5", "unipc"]

log = logging.getLogger(__name__)

PAIRS_STREAM = 0x7265666C  # keeps the reflow pairs' noise seed apart from the run seed's other uses
PAIRS_SEED_KEY = "reflow_pairs_seed"
SOLVER_METHODS = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "dopri5": "dopri5"}
EVALUATIONS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "unipc": 1}


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """`x0` (N, ...) re-ordered so that x0[i] goes with x1[i] in the assignment of least total squared Euclidean
    distance (minibatch optimal transport with uniform weights: a permutation)."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = torch.empty(len(cols), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return x0[order.to(x0.device)]


def odeint(func: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, method: str, **options) -> Tensor:
    """torchdiffeq's odeint over the grid `t`, returning the state at its last point."""
    from torchdiffeq import odeint as torchdiffeq_odeint  # imported when a flow samples

    return torchdiffeq_odeint(func, x, t, method=method, **options)[-1]


class Flow(IterativeModel):
    """A flow-matching model (see the module docstring) over images (N, C, H, W) in [-1, 1], or vectors (N, D).
    Options are checked on construction (pydantic's ValidationError naming the parameter; GdmError for guidance
    without conditioning or labels the data lacks)."""

    samplers = ("euler", "midpoint", "heun", "dopri5", "unipc")

    @checked
    def __init__(
        self,
        image_shape: tuple[int, ...],
        net: NetFactory,
        num_classes: int | None = None,
        sampler: Annotated[Sampler, Field(
            description="ODE solver: euler | midpoint | heun | dopri5 (adaptive) | unipc (multistep)")] = "heun",
        steps: Steps = 16,
        atol: Annotated[Tolerance, Field(description="dopri5's absolute tolerance, 1e-4 in torchcfm")] = 1e-4,
        rtol: Annotated[Tolerance, Field(description="dopri5's relative tolerance, 1e-4 in torchcfm")] = 1e-4,
        time_sampling: Annotated[Literal["uniform", "logit_normal", "u_shaped"], Field(description=(
            "training times: uniform | logit_normal (Esser et al. 2024) | u_shaped (Lee et al. 2024)"))] = "uniform",
        logit_mean: Annotated[Real, Field(description="logit-normal m, 0 in Esser et al.")] = 0.0,
        logit_std: Annotated[Tolerance, Field(description="logit-normal s, 1 in Esser et al.")] = 1.0,
        u_shape: Annotated[float, Field(gt=0, le=50, strict=True, description=(
            "u_shaped times: t or 1 - t, t of density ~ exp(a t); a = 4 in Lee et al. 2024"))] = 4.0,
        ot_pairing: Annotated[Flag, Field(description="minibatch OT pairing of noise and data (OT-CFM)")] = False,
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
        teacher: Annotated[str | None, Field(description=(
            "a gdm flow checkpoint whose (noise, sample) pairs this flow trains on, from its weights (reflow, Liu et "
            "al. 2023); null: noise and images paired at random"))] = None,
        teacher_pairs: Annotated[Count, Field(description="reflow: pairs the teacher draws before training")] = 10000,
        teacher_sampler: Annotated[Sampler | None, Field(description=(
            "reflow: the sampler the teacher draws its pairs with; null: its own"))] = None,
        teacher_steps: Annotated[Count | None, Field(description=(
            "reflow: the teacher's sampler steps; null: its own"))] = None,
        teacher_model: nn.Module | None = None,
    ):
        super().__init__(image_shape, net, num_classes, conditional, label_dropout, guidance, sampler, steps, lr,
                         betas, lr_warmup_steps, grad_clip, ema_halflife_kimg, ema_rampup_ratio, num_visuals,
                         visual_seed, autoencoder=autoencoder,
                         latent_net=latent_net, latent=latent, nll_tolerance=nll_tolerance)
        self.save_hyperparameters(ignore=["net", "latent_net", "latent", "teacher_model"])
        self.atol, self.rtol = atol, rtol
        self.time_sampling, self.logit_mean, self.logit_std = time_sampling, logit_mean, logit_std
        self.u_shape = u_shape
        self.ot_pairing = ot_pairing
        self.teacher, self.teacher_pairs = teacher, teacher_pairs
        self.teacher_model: Flow | None = None  # training only, dropped once its pairs are drawn
        self.couplings: Couplings | None = None
        self.pairs_seed: int | None = None  # kept in checkpoints, so a resumed run draws the same pairs
        if teacher_model is not None:
            self.start_from_teacher(teacher_model, teacher_sampler, teacher_steps)

    # ---- reflow ---------------------------------------------------------------------------

    def start_from_teacher(self, teacher: nn.Module, sampler: str | None, steps: int | None) -> None:
        """Take `teacher`'s EMA weights as this net's and its EMA's, and keep the teacher, set to `sampler` and
        `steps` (None: its own), to draw the pairs at the start of training. GdmError when it is not a pixel-space
        flow of this model's conditioning and net."""
        where = f"teacher={self.teacher}"
        if not isinstance(teacher, Flow):
            raise GdmError(f"{where} is a {type(teacher).__name__} checkpoint, and reflow needs a flow's: train one "
                           "as a flow (model=flow).")
        if teacher.latent is not None or self.latent is not None:
            raise GdmError(f"{where}: reflow is built for pixel-space flows; train the teacher and this model "
                           "with autoencoder=null.")
        if teacher.conditional != self.conditional:
            raise GdmError(f"{where} is {'' if teacher.conditional else 'un'}conditional and this model is not: set "
                           f"conditional={str(teacher.conditional).lower()}, as the teacher was trained.")
        try:
            self.net.load_state_dict(teacher.net_ema.module.state_dict())
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise GdmError(f"{where} has another net than this model's ({first[:160]}): train with the teacher's net "
                           "options (its run's config.yaml), as reflow starts from its weights.") from None
        self.net_ema.module.load_state_dict(teacher.net_ema.module.state_dict())
        teacher.set_sampling(sampler, steps)
        object.__setattr__(self, "teacher_model", teacher)  # not a submodule: neither trained nor checkpointed

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.teacher_model is None:
            return
        if self.pairs_seed is None:  # a new run: the pairs' noise apart from any evaluation's sample sequence
            seed = int(np.random.SeedSequence([torch.initial_seed(), PAIRS_STREAM]).generate_state(1)[0])
            # rank 0's: under DDP the other processes are re-seeded for streams of their own, and all draw one set
            self.pairs_seed = int(self.trainer.strategy.broadcast(seed, src=0)) if self.attached_trainer() else seed
        teacher = self.teacher_model.to(self.device)
        start = time.perf_counter()
        self.couplings = Couplings.draw(teacher, self.teacher_pairs, self.pairs_seed)
        log.info(f"reflow: {self.teacher_pairs} pairs drawn by {self.teacher} ({teacher.sampler_name}, "
                 f"{teacher.steps} steps, seed {self.pairs_seed}) in {time.perf_counter() - start:.1f} s")
        self.teacher_model = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.teacher is not None:
            checkpoint[PAIRS_SEED_KEY] = self.pairs_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.pairs_seed = checkpoint.get(PAIRS_SEED_KEY)

    # ---- training -------------------------------------------------------------------------

    def training_times(self, n: int, device, generator: torch.Generator | None = None) -> Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device, generator=generator)
        if self.time_sampling == "u_shaped":  # t of density ~ exp(a t), or 1 - t, even odds
            u, side = torch.rand(2, n, device=device, generator=generator)
            t = torch.log1p(u * math.expm1(self.u_shape)) / self.u_shape  # inverse CDF of exp(a t) on [0, 1]
            return torch.where(side < 0.5, t, 1 - t)
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, device=device, generator=generator))

    def loss(self, x: Tensor, labels: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """|v(x_t, t) - (x_1 - x_0)|^2 per sample (N,), the mean over its elements; x_1 = `x`, x_0 noise (OT-paired
        with the batch when `ot_pairing`)."""
        x0 = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        if self.ot_pairing:
            x0 = ot_pairing(x0, x)
        return self.path_loss(x0, x, labels, generator)

    def path_loss(self, x0: Tensor, x1: Tensor, labels: Tensor | None,
                  generator: torch.Generator | None = None) -> Tensor:
        """The loss of pairs (x_0, x_1) (N, ...) at training times: |v(x_t, t) - (x_1 - x_0)|^2 (N,)."""
        t = self.training_times(x1.shape[0], x1.device, generator)
        tb = t.view(-1, *[1] * (x1.dim() - 1)).to(x1.dtype)
        x_t = tb * x1 + (1 - tb) * x0
        return mse(self.run_net(self.net, x_t, 1000 * t.float(), labels), x1 - x0)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if self.couplings is None:
            return super().training_step(batch, batch_idx)
        # Reflow: a batch of the teacher's pairs, as many as the data's batch (which sets the steps of an epoch).
        x0, x1, labels = self.couplings.batch(batch["image"].shape[0])
        labels = None if labels is None else self.training_labels({"label": labels.to(self.device)})
        loss = self.path_loss(self.to_model(x0), self.to_model(x1), labels).mean()
        self.log("train/loss", loss.detach())
        return loss if self.loss_ok("loss", loss) else None

    # ---- sampling -------------------------------------------------------------------------

    def velocity(self, net: nn.Module, labels: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """dx/dt = v(x, t), guided, as torchdiffeq calls it: (t scalar, x (N, ...)) -> (N, ...)."""
        return lambda t, x: self.predict(net, x, 1000 * t.reshape(1), labels)

    def solve(self, net: nn.Module, noise: Tensor, labels: Tensor | None, indices: Sequence[int],
              seed: int) -> Tensor:
        if self.sampler_name == "unipc":  # at t = 1 - s, on even steps; diffusers' noise - data is -v
            s = torch.linspace(1, 0, self.steps + 1, dtype=torch.float64)[:-1]
            return unipc(lambda x, s: -self.predict(net, x, 1000 * (1 - s.reshape(1)), labels), noise, s)
        func = self.velocity(net, labels)
        if self.sampler_name == "dopri5":
            t = torch.tensor([0.0, 1.0], device=noise.device)
            return odeint(func, noise, t, "dopri5", atol=self.atol, rtol=self.rtol)
        t = torch.linspace(0, 1, self.steps + 1, device=noise.device)
        return odeint(func, noise, t, SOLVER_METHODS[self.sampler_name])

    def nfe(self) -> int | None:
        per_step = EVALUATIONS_PER_STEP.get(self.sampler_name)
        return None if per_step is None else per_step * self.steps

    def probability_flow(self, net: nn.Module, labels: Tensor | None) -> ProbabilityFlow:
        """The sampling ODE itself, from data at t = 1 to N(0, I) at t = 0."""
        return ProbabilityFlow(self.velocity(net, labels), t_data=1.0, t_noise=0.0, noise_std=1.0, time="t")

    def sampling_protocol(self) -> dict:
        protocol = {"formulation": "rectified flow", **super().sampling_protocol()}
        if self.sampler_name == "dopri5":
            protocol.update(atol=self.atol, rtol=self.rtol, steps=None)
        if self.teacher is not None:  # what the weights were trained on (absent otherwise: plain flows keep their ids)
            protocol["reflow"] = {"teacher": self.teacher, "pairs": self.teacher_pairs, "pairs_seed": self.pairs_seed,
                                  "teacher_sampler": self.hparams.get("teacher_sampler"),
                                  "teacher_steps": self.hparams.get("teacher_steps")}
        return protocol
