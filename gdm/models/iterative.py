"""What diffusion and flow-matching models share: a net trained by regression on noised data, and samples drawn by
integrating it over noise levels (or time) with a chosen sampler and number of steps.

A family (`gdm.models.diffusion`, `gdm.models.flow`) gives its training loss (`loss`: EDM2's `EDMLoss`, lucidrains'
`forward`) and its sampler (`solve`); this base owns the rest, the same for both:
- the net (`gdm.nets.unet.UNet` over images, `gdm.nets.time_mlp.TimeMLP` over vectors) and its EMA copy, whose
  decay follows EDM's half-life in images with its ramp-up (Karras et al. 2022: 500 k images, ramp-up ratio 0.05),
  so the average spans a fixed share of a short run and the published span of a long one; samples and metrics use
  the EMA copy;
- Adam with a linear learning-rate warm-up, gradient clipping (`grad_clip`, an L2 norm);
- class conditioning with classifier-free guidance (Ho & Salimans 2022): in training the label is replaced by the
  null label with probability `label_dropout` (0.1 in the paper), and sampling mixes the conditional and
  unconditional predictions, `u + guidance * (c - u)` (guidance 1: the conditional model alone);
- per-index seeded sampling: sample i's initial noise (and a stochastic sampler's noise at every step) comes from
  generators seeded by (seed, i), so a metric does not depend on batch size or on the number of processes;
- the sampler and its steps as options (`samplers`), recorded with the number of function evaluations (NFE) in
  every sample metric's protocol (`sampling_protocol`) and changeable on a checkpoint (`set_sampling`);
- a latent variant (`latent`, a `gdm.models.latent.LatentSpace`): the model trains on the scaled codes of a frozen
  gdm AE or VAE, with `latent_net` (a vector net) in place of `net`, and decodes its samples to images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import SIGTERMException
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.likelihoods import DEQUANTIZATION, pixel_levels
from gdm.models.base import GenerativeModule, Samples, latent_labels, latent_noise
from gdm.models.ema import EMA, HalfLife, RampUp
from gdm.models.latent import LatentSpace
from gdm.models.multistep import unipc_protocol
from gdm.option_types import AdamBetas, Count, Flag, GradClip, LearningRate, NLLTolerance, NonNegativeInt, Visuals

NetFactory = Callable[..., nn.Module]
Autoencoder = Annotated[str | None, Field(description=(
    "a gdm AE or VAE checkpoint: train in its latent space (latent diffusion / flow); null: in pixel space"))]
Steps = Annotated[Count, Field(description="sampler steps")]
LabelDropout = Annotated[float, Field(ge=0, lt=1, strict=True, allow_inf_nan=False, description=(
    "probability of training a sample with the null label (classifier-free guidance; 0.1 in Ho & Salimans 2022)"))]
Guidance = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False, description=(
    "classifier-free guidance scale at sampling: u + guidance * (c - u); 1: the conditional model alone"))]


def index_generators(indices: Sequence[int], seed: int, stream: int) -> list[torch.Generator]:
    """One CPU generator per sample index, seeded by (seed, index, stream): the noise a stochastic sampler draws
    for sample i at every step, whatever the batch it is in (`stream` keeps it apart from the initial noise)."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, int(i), stream]).generate_state(1)[0]))
            for i in indices]


def per_index_randn(generators: list[torch.Generator], shape: tuple[int, ...], like: Tensor) -> Tensor:
    """(len(generators), *shape) standard normal noise, row i from generator i, on `like`'s device and dtype."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(like.device, like.dtype)


@dataclass
class ProbabilityFlow:
    """An ODE that carries the data distribution (at t_data) to N(0, noise_std^2 I) (at t_noise):
    `velocity(t, x)` = dx/dt, t a 0-dimensional tensor; `time` names t (recorded in the likelihood's protocol)."""

    velocity: Callable[[Tensor, Tensor], Tensor]
    t_data: float
    t_noise: float
    noise_std: float
    time: str


EXACT_DIVERGENCE_DIMS = 64  # up to this many dimensions the divergence is exact, above it Hutchinson's estimate


class IterativeModel(GenerativeModule, Samples):
    """Base of `Diffusion` and `Flow`; see the module docstring. Subclasses set `samplers` and implement `loss`,
    `solve` and `nfe`."""

    samplers: tuple[str, ...] = ()

    def __init__(self, image_shape: tuple[int, int, int], net: NetFactory, num_classes: int | None,
                 conditional: Flag, label_dropout: LabelDropout, guidance: Guidance, sampler: str, steps: Steps,
                 lr: LearningRate, betas: AdamBetas, lr_warmup_steps: NonNegativeInt, grad_clip: GradClip,
                 ema_halflife_kimg: HalfLife, ema_rampup_ratio: RampUp, num_visuals: Visuals, visual_seed: int,
                 autoencoder: Autoencoder = None, latent_net: NetFactory | None = None,
                 latent: LatentSpace | None = None, nll_tolerance: NLLTolerance = 1e-5):
        super().__init__()
        if autoencoder is not None and latent is None:
            raise GdmError(f"autoencoder={autoencoder} names a checkpoint that only a run or gdm.checkpoints."
                           "load_model reads: build the model with one of them (they pass `latent`).")
        if latent is not None and latent_net is None:
            raise GdmError("a latent model needs latent_net, the net over its codes (e.g. gdm.nets.time_mlp.TimeMLP).")
        if conditional and not num_classes:
            raise GdmError("conditional=true needs labelled data, and this data has no labels: use data=digits, "
                           "mnist, cifar10, or an image folder with one sub-folder per class.")
        self.check_guidance(guidance, conditional, label_dropout)
        self.conditional = conditional
        self.requires = frozenset({"image", "label"} if conditional else {"image"})
        self.latent = latent  # a submodule: the frozen autoencoder and the codes' scale travel in checkpoints
        self.shape = latent.shape if latent is not None else tuple(image_shape)
        self.net = (latent_net if latent is not None else net)(image_shape=self.shape,
                                                               num_classes=num_classes if conditional else None)
        self.net_ema = EMA(self.net, ema_halflife_kimg, ema_rampup_ratio)
        self.num_classes = num_classes if conditional else None
        self.label_dropout, self.guidance = label_dropout, guidance
        self.lr, self.betas, self.lr_warmup_steps, self.grad_clip = lr, tuple(betas), lr_warmup_steps, grad_clip
        self.num_visuals, self.visual_seed = num_visuals, visual_seed
        self.nll_tolerance = nll_tolerance
        self.register_buffer("class_probs", torch.full((num_classes or 1,), 1.0 / (num_classes or 1)))
        self.sampler_name, self.steps = "", 1
        self.set_sampling(sampler, steps)
        self.function_evaluations = 0  # of the net, counted over the last `generate` (adaptive solvers)
        self.ema_nhwc = False  # while `ema_weights` holds the EMA net channels-last
        self._measured = [0.0, 0]  # adaptive solvers: evaluations x samples, and samples, since begin_measurement

    # ---- training -------------------------------------------------------------------------

    def loss(self, x: Tensor, labels: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """The per-sample training loss (N,) of clean data `x` (N, *shape) in the model's space. `generator`:
        draw the noise from it (validation), else from the global RNG."""
        raise NotImplementedError

    def training_labels(self, batch: dict) -> Tensor | None:
        """The batch's labels, each replaced by the null label with probability `label_dropout`."""
        if not self.conditional:
            return None
        labels = batch["label"]
        drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def to_space(self, images: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] -> points of the space the model trains in (a latent model's codes)."""
        return self.latent.encode(images) if self.latent is not None else images

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        x = self.to_space(batch["image"])
        loss = self.loss(x, self.training_labels(batch)).mean()
        self.log("train/loss", loss.detach())
        return loss if self.loss_ok("loss", loss) else None  # None: Lightning skips the update

    def upgrade_state(self, state_dict: dict) -> None:
        # Checkpoints written before the EMA kept its own count of images seen held it in the model.
        if "images_seen" in state_dict:
            state_dict.setdefault("net_ema.images_seen", state_dict.pop("images_seen"))

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        world = self.trainer.world_size if self.attached_trainer() else 1
        self.net_ema.update(self.net, batch["image"].shape[0] * world)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The trained net's loss (not the EMA's), with the same noise at every evaluation (seeded by the batch), so
        # val/loss moves only with the weights.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        labels = batch["label"] if self.conditional else None
        loss = self.loss(self.to_space(batch["image"]), labels, generator).mean()
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        trainer_clip = self._trainer.gradient_clip_val if self._trainer is not None else None
        optimizer = self.adam(list(self.net.parameters()), self.lr, self.betas, self.grad_clip or trainer_clip)
        if not self.lr_warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / self.lr_warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # model.grad_clip is an L2 norm (DDPM's); trainer.gradient_clip_val clips as its gradient_clip_algorithm says.
        # Both set is refused before training (gdm.tasks.build.check_gradient_clipping).
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # ---- likelihood -----------------------------------------------------------------------

    def probability_flow(self, net: nn.Module, labels: Tensor | None) -> ProbabilityFlow | None:
        """The family's probability-flow ODE, or None when it has none to offer (no test/nll_bpd)."""
        return None

    def log_likelihood(self, x: Tensor, labels: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """log p(x) in nats per sample (N,) of points `x` (N, *shape) in the model's space, by the instantaneous
        change of variables (Chen et al. 2018): integrating dx/dt = v and d(delta)/dt = div v from t_data to t_noise
        with dopri5 (atol = rtol = `nll_tolerance`), log p(x) = log N(x(t_noise); 0, noise_std^2 I) + delta. The
        divergence is exact up to EXACT_DIVERGENCE_DIMS dimensions, else Hutchinson's estimate with one Gaussian
        probe per sample held over the solve (FFJORD). Uses the EMA net, in float32 under mixed precision (autocast
        off: bfloat16's rounding would be the solver's error; under bf16-true the weights stay bfloat16, recorded in
        `test_protocol`)."""
        from torchdiffeq import odeint  # imported when a likelihood is computed

        exact = math.prod(self.shape) <= EXACT_DIVERGENCE_DIMS
        # Lightning tests under inference mode, whose tensors autograd cannot use: leave it, and copy the inputs.
        with torch.inference_mode(False), torch.autocast(x.device.type, enabled=False), self.ema_weights() as net:
            x = x.clone()
            labels = None if labels is None else labels.clone()
            probe = torch.randn(x.shape, device=x.device, generator=generator, dtype=torch.float32)
            flow = self.probability_flow(net, labels)

            def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
                with torch.enable_grad():
                    y = state[0].detach().requires_grad_(True)
                    v = flow.velocity(t, y)
                    if exact:
                        flat = v.flatten(1)
                        div = sum(torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True)[0].flatten(1)[:, i]
                                  for i in range(flat.shape[1]))
                    else:
                        div = (torch.autograd.grad((v * probe).sum(), y)[0] * probe).flatten(1).sum(1)
                return v.detach(), div.detach()

            t = torch.tensor([flow.t_data, flow.t_noise], device=x.device, dtype=torch.float32)
            state = (x.float(), torch.zeros(x.shape[0], device=x.device))
            z, delta = (s[-1] for s in odeint(dynamics, state, t, method="dopri5", atol=self.nll_tolerance,
                                               rtol=self.nll_tolerance))
        d = math.prod(self.shape)
        log_prior = -0.5 * (z / flow.noise_std).pow(2).flatten(1).sum(1) - d * math.log(
            flow.noise_std * math.sqrt(2 * math.pi))
        return log_prior + delta

    def has_likelihood(self) -> bool:
        """Whether test_step reports the images' likelihood: not for DDPM, nor for a latent model (its density is
        over codes, not pixels)."""
        return self.latent is None and self.probability_flow(self.net, None) is not None

    def test_protocol(self) -> dict:
        """How test/nll and test/nll_bpd are computed: the `estimator` (this model's own way to its likelihood, which
        `task=compare` sets beside another's, as a sampler) and the images' dequantization."""
        exact = math.prod(self.shape) <= EXACT_DIVERGENCE_DIMS
        estimator = {"method": "instantaneous change of variables (probability-flow ODE)", "solver": "dopri5",
                     "ode_time": self.probability_flow(self.net, None).time, "atol": self.nll_tolerance,
                     "rtol": self.nll_tolerance, "weights": "EMA",
                     "divergence": "exact" if exact else "Hutchinson, one Gaussian probe per image"}
        net_dtype = next(self.net_ema.module.parameters()).dtype
        if net_dtype != torch.float32:  # bf16-true: the net's arithmetic is not float32's (absent otherwise, so
            estimator["net_dtype"] = str(net_dtype).removeprefix("torch.")  # float32 runs keep their protocol ids)
        return {"estimator": estimator, "dequantization": DEQUANTIZATION}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """test/nll (nats per image) and test/nll_bpd (bits per dimension) of the 8-bit test images, uniformly
        dequantized as the VAE's Gaussian likelihood does (y = (k + u) / 256): -log P(k) <= -E_u log p(y) +
        D log 256, with p(y) = 2^D p_x(2 y - 1) for the model's [-1, 1] space. A bound, comparable with the VAE's
        test/nll_iwae; logged only when the model has a probability flow (not DDPM)."""
        if not self.has_likelihood():
            return
        images = batch["image"]
        labels = batch["label"] if self.conditional else None
        y = (pixel_levels(images) + torch.rand_like(images)) / 256
        d = math.prod(self.shape)
        nll = -(self.log_likelihood(2 * y - 1, labels) + d * math.log(2)) + d * math.log(256)
        self.log_dict({"test/nll": nll.mean(), "test/nll_bpd": nll.mean() / (d * math.log(2))},
                      batch_size=images.shape[0], sync_dist=True)

    # ---- sampling -------------------------------------------------------------------------

    @contextmanager
    def ema_weights(self) -> Iterator[nn.Module]:
        """Context in which the EMA copy of the net is in eval mode (dropout off), and an image net's weights and
        inputs are channels-last (NHWC: the digits U-Net's sampling is measured faster so on the CPU, its training
        not; experiments/diffusion_flow.md, seventh pass); yields it, restored after."""
        net = self.net_ema.module
        nhwc = len(self.shape) == 3
        with self.evaluating(net):
            if nhwc:
                self.set_ema_layout(torch.channels_last)
            try:
                yield net
            finally:
                if nhwc:
                    self.set_ema_layout(torch.contiguous_format)

    def set_ema_layout(self, layout: torch.memory_format) -> None:
        # Outside inference mode, which Lightning's evaluation loops run in: the EMA's weights must stay ordinary
        # tensors, which the EMA update and the likelihood's autograd use after.
        with torch.inference_mode(False):
            self.net_ema.module.to(memory_format=layout)
        self.ema_nhwc = layout == torch.channels_last

    def run_net(self, net: nn.Module, x: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        """net(x, c_noise, labels) in the weights' dtype (bfloat16 under bf16-true, while the samplers' and the
        losses' arithmetic stays in float32), returned in `x`'s dtype; `c_noise` (N,) or a scalar."""
        x_in = self.to_model(x)
        if self.ema_nhwc and net is self.net_ema.module:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        return net(x_in, c_noise.reshape(-1).expand(x.shape[0]).to(x_in.dtype), labels).to(x.dtype)

    def predict(self, net: nn.Module, x: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        """The net's output at `x`, guided: u + guidance * (c - u) for a conditional model with guidance != 1 (one
        batch of both), counted as one function evaluation per sample. After a SIGTERM (a preemption) it raises
        Lightning's SIGTERMException instead: a sampling or likelihood solve of minutes (dopri5) stops at its next net
        call, as training stops after its batch, and the run's on-exception checkpoint and records are written."""
        trainer = self._trainer
        if trainer is not None and trainer.received_sigterm:
            raise SIGTERMException
        self.function_evaluations += 1
        if labels is None or self.guidance == 1.0:
            return self.run_net(net, x, c_noise, labels)
        null = torch.full_like(labels, self.num_classes)
        c_noise = c_noise.reshape(-1).expand(x.shape[0])
        cond, uncond = self.run_net(net, torch.cat([x, x]), torch.cat([c_noise, c_noise]),
                                    torch.cat([labels, null])).chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def solve(self, net: nn.Module, noise: Tensor, labels: Tensor | None, indices: Sequence[int],
              seed: int) -> Tensor:
        """Integrate from standard normal `noise` (N, *shape) to samples in the model's space with `sampler_name`
        and `steps`; `indices` and `seed` seed a stochastic sampler's noise per sample."""
        raise NotImplementedError

    def nfe(self) -> int | None:
        """Function evaluations per sample of the configured sampler; None for an adaptive solver."""
        raise NotImplementedError

    @staticmethod
    def check_guidance(guidance: float, conditional: bool, label_dropout: float, trained: bool = False) -> None:
        """GdmError when a guidance scale other than 1 has no trained unconditional prediction to mix in. `trained`:
        set on a trained model, whose conditioning can no longer change (the advice says so)."""
        if guidance < 0:
            raise GdmError(f"guidance={guidance} must be >= 0 (1: the conditional model alone).")
        if guidance != 1.0 and not conditional:
            raise GdmError(f"guidance={guidance} mixes conditional and unconditional predictions, and this model "
                           + (f"was trained unconditional: drop guidance={guidance} (1, the model alone, is its only "
                              "value), or guide a model trained with labels (conditional=true)." if trained else
                              "is unconditional: set guidance=1, or conditional=true with labelled data."))
        if guidance != 1.0 and label_dropout == 0:
            raise GdmError(f"guidance={guidance} mixes in the prediction for the null label, which label_dropout=0 "
                           + (f"never trained: drop guidance={guidance} (1 is this model's only value), or guide a "
                              "model trained with label_dropout above 0." if trained else
                              "never trains: set label_dropout above 0 (0.1 in Ho & Salimans 2022), or guidance=1."))

    def default_steps(self, sampler: str) -> int | None:
        """The steps `sampler` takes when none are given; None: the current ones (a family whose samplers' steps
        mean the same)."""
        return None

    def set_sampling(self, sampler: str | None = None, steps: int | None = None,
                     guidance: float | None = None) -> None:
        """Sample with `sampler` (one of `samplers`), `steps` and classifier-free `guidance` from now on; None keeps
        the current one (another sampler without steps: that sampler's `default_steps`). Raises GdmError naming
        the value otherwise."""
        if guidance is not None:
            self.check_guidance(float(guidance), self.conditional, self.label_dropout, trained=True)
            self.guidance = float(guidance)
        if sampler is not None and sampler not in self.samplers:
            raise GdmError(f"sampler={sampler} is not a sampler of {type(self).__name__}"
                           f"{self.formulation_words()}: choose one of {', '.join(self.samplers)}.")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise GdmError(f"steps={steps} must be an integer >= 1 (sampler steps).")
        if sampler is not None and sampler != self.sampler_name and steps is None:
            steps = self.default_steps(sampler)
        self.sampler_name = sampler or self.sampler_name
        self.steps = steps or self.steps
        if self.sampler_name == "unipc":  # diffusers imported now, not inside a timed sampling
            from diffusers import UniPCMultistepScheduler  # noqa: F401

    def formulation_words(self) -> str:
        return ""

    def begin_measurement(self) -> None:
        self._measured = [0.0, 0]

    def measured_nfe(self) -> float | None:
        """An adaptive solver's mean function evaluations per sample since `begin_measurement` (it picks one step
        size per batch, so batches differ); None before any sample."""
        total, samples = self._measured
        return total / samples if samples else None

    def sampling_protocol(self) -> dict:
        nfe = self.nfe()
        protocol = {"sampler": self.sampler_name, "steps": self.steps,
                    "nfe": nfe if nfe is not None else self.measured_nfe(), "weights": "EMA"}
        if self.sampler_name == "unipc":
            protocol.update(unipc_protocol())
        if self.conditional:
            protocol["guidance"] = self.guidance
        if self.latent is not None:
            protocol["latent"] = self.latent.protocol()
        return protocol

    def set_class_frequencies(self, counts: Tensor) -> None:
        """Images per class in the training split: the labels of class-balanced samples follow them."""
        self.class_probs.copy_(counts.float() / counts.sum())

    def sample_labels(self, indices: Sequence[int] | Tensor, seed: int = 0) -> Tensor | None:
        """The labels of samples `indices` as `generate` and the evaluation draw them: class-balanced, seeded per
        index (None when unconditional)."""
        return latent_labels(indices, self.class_probs, seed).to(self.device) if self.conditional else None

    def initial_noise(self, indices: Sequence[int], seed: int) -> Tensor:
        """Samples `indices`' starting noise (N, *shape), standard normal, each from its own seeded generator, on
        this model's device, in float32: the samplers' arithmetic stays float32 under bf16-true too (`run_net` casts
        the net's inputs to its weights' dtype and its output back)."""
        return latent_noise(indices, math.prod(self.shape), seed).view(-1, *self.shape).to(self.device)

    @torch.no_grad()
    def generate(self, indices: Sequence[int] | Tensor, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """Samples `indices` of the seeded sequence from the EMA net: (N, C, H, W) in [-1, 1]. A conditional model
        draws class `labels[i]` for sample i (else class-balanced labels, seeded per index)."""
        indices = indices.tolist() if isinstance(indices, Tensor) else list(indices)
        noise = self.initial_noise(indices, seed)
        if self.conditional:
            labels = self.sample_labels(indices, seed) if labels is None else labels
            labels = torch.as_tensor(labels, device=self.device).long()
        else:
            labels = None
        self.function_evaluations = 0
        with self.ema_weights() as net:
            x = self.solve(net, noise, labels, indices, seed)
        self._measured[0] += self.function_evaluations * len(indices)
        self._measured[1] += len(indices)
        out = self.decode_samples(x).float()
        return out.clamp(-1, 1) if out.dim() == 4 else out  # images end in [-1, 1]; vectors (a toy) are left as drawn

    def decode_samples(self, x: Tensor) -> Tensor:
        """Samples in the model's space -> images in [-1, 1] (a latent model decodes them)."""
        return self.latent.decode(self.to_model(x)) if self.latent is not None else x

    def visuals(self, examples: dict[str, Tensor]) -> dict[str, tuple[Tensor, int]]:
        n, seed = self.num_visuals, self.visual_seed
        if not self.conditional or self.num_classes > 20:
            return {"samples": (self.generate(range(n), seed=seed), int(n**0.5))}
        labels = torch.arange(self.num_classes).repeat_interleave(8)  # one row per class, 0 at the top
        return {"samples": (self.generate(range(len(labels)), seed=seed, labels=labels), 8)}


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the first dimension: (N, ...) -> (N,)."""
    return x.flatten(1).mean(1)


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    return mean_flat(F.mse_loss(prediction.float(), target.float(), reduction="none"))
