"""What every gdm model shares: declared batch needs, seeded generation, images to show, what it can do, and
what a non-finite loss does.

What a model can do, as the one way evaluation and the tasks ask: `isinstance(model, Samples)`.

- `Samples`: draws images: sample i of a fixed, seeded sequence (`generate`). Conditional models
  (`conditional = True`) draw class-balanced labels unless given labels.
- `Translates`: maps images of one domain to another (`translate`, `directions`).

Everything a metric needs from the data is passed in as an argument (a loader, example images), so
models never read the trainer's datamodule.

The divergence guard of training updates: what a NaN or Inf loss does, without a host sync per update.

Models call `loss_ok(name, loss)` before each backward pass and follow the `NonFinitePolicy` the task gives
them at build (`set_nonfinite_policy`). With action=stop (default) the loss stays on its device and is read
back every `check_every_n_steps` batches and before each evaluation or checkpoint, so a checkpoint never holds
weights trained on a non-finite loss; action=skip decides at once (one sync per update), the price of leaving
that update out, and `max_consecutive_skips` skipped updates of one loss in a row stop the run (the weights
are likely broken). A stop raises `Diverged`: one line naming the loss, its value and the step; the run's
last.ckpt (the last evaluation's, before the divergence) stays the newest checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch import nn

from gdm.errors import GdmError
from gdm.option_types import Count, NonNegativeInt, checked


class Samples(ABC):
    conditional: bool = False

    @abstractmethod
    def generate(self, indices: Sequence[int] | torch.Tensor, seed: int = 0,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples number `indices` of the model's seeded sample sequence: (len(indices), C, H, W) in [-1, 1].
        A conditional model draws class `labels[i]` for sample i when labels are given."""

    def sampling_protocol(self) -> dict:
        """How this model draws samples, recorded in every sample metric's protocol: the sampler, its steps and
        the number of function evaluations (NFE: forward passes of the net per sample; for an adaptive solver the
        mean per sample measured since `begin_measurement`). One forward pass for a GAN or a VAE's decoder."""
        return {"sampler": "one forward pass", "nfe": 1}

    def set_sampling(self, sampler: str | None = None, steps: int | None = None,
                     guidance: float | None = None) -> None:
        """Sample with another sampler, number of steps or guidance scale (task=eval / sample on a checkpoint). A
        model drawn in one forward pass has none: GdmError for any value."""
        given = ", ".join(f"{k}={v}" for k, v in (("sampler", sampler), ("steps", steps), ("guidance", guidance))
                          if v is not None)
        if given:
            raise GdmError(f"{given}: {type(self).__name__} draws each sample in one forward pass, with no sampler "
                           "or steps to choose; drop the option (it applies to model=diffusion and model=flow).")

    def begin_measurement(self) -> None:  # noqa: B027 (optional hook)
        """Called before an evaluation's `generate` calls: what `sampling_protocol` measures (an adaptive solver's
        NFE) counts from here."""

    def prepare_sampling(self, train_batches: Iterable[dict]) -> None:  # noqa: B027 (optional hook)
        """Called before each evaluation's sampling with this process's share of the training split (a model
        that samples from a fitted latent distribution, like the AE, refits it here)."""


# Translation directions between domains A and B: direction -> (source domain, target domain), and the way back.
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}
REVERSE = {"AtoB": "BtoA", "BtoA": "AtoB"}


class Translates(ABC):
    # direction -> (source domain, target domain)
    directions: dict[str, tuple[str, str]] = {}
    reverse: dict[str, str] = {}
    size_multiple: int = 4  # image sides the generator takes are multiples of this (its stride-2 stages)

    @abstractmethod
    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] of the direction's source domain -> the target domain, in [-1, 1]."""


class Diverged(GdmError):
    """A non-finite training loss stopped the run."""


class NonFinitePolicy:
    """What a NaN / Inf training loss does: `action` stop (the run) or skip (that update);
    `max_consecutive_skips`: with skip, this many skipped updates of one loss in a row stop the run;
    `check_every_n_steps`: with stop, batches between read-backs of the kept losses. Raises pydantic's
    ValidationError naming the parameter for a value out of range."""

    @checked
    def __init__(self, action: Annotated[Literal["stop", "skip"], Field(
                     description="what a NaN / Inf loss does: stop the run, or skip that update")] = "stop",
                 max_consecutive_skips: Annotated[NonNegativeInt, Field(
                     description="skipped updates of one loss in a row that stop the run")] = 20,
                 check_every_n_steps: Annotated[Count, Field(
                     description="batches between read-backs of the losses")] = 10):
        self.action, self.max_consecutive_skips = action, max_consecutive_skips
        self.check_every_n_steps = check_every_n_steps

    def _fields(self) -> tuple:
        return self.action, self.max_consecutive_skips, self.check_every_n_steps

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NonFinitePolicy) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"NonFinitePolicy(action={self.action!r}, max_consecutive_skips={self.max_consecutive_skips}, "
                f"check_every_n_steps={self.check_every_n_steps})")


class NonFiniteGuard:
    """Mixin of `GenerativeModule` (a LightningModule); works in a plain loop without a Trainer too."""

    nonfinite_policy: NonFinitePolicy = NonFinitePolicy()
    # Losses recorded without a trainer (a plain loop) are read back after this many, so they cannot pile up.
    max_pending_losses: int = 256

    def set_nonfinite_policy(self, policy: NonFinitePolicy) -> None:
        self.nonfinite_policy = policy

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this model, None in a plain loop (Lightning raises RuntimeError when detached)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def loss_ok(self, name: str, loss: torch.Tensor) -> bool:
        """Whether to take the update for `loss`; False: skip it. Call before its backward pass.

        action=stop (default): no device sync here. The loss is kept (on its device) and `check_losses` reads
        the kept ones back every `check_every_n_steps` batches and before each evaluation or checkpoint; a
        non-finite one stops the run there with one line: the loss, its value, the step it happened at.
        The few updates in between are taken, but no checkpoint holds their weights.
        action=skip decides now, before the step: one device sync (and under DDP one collective) per call,
        the price of leaving that update out."""
        if self.nonfinite_policy.action == "skip":
            return self._skip_decision(name, loss)
        pending = self.__dict__.setdefault("_pending_losses", [])
        pending.append((name, loss.detach(), self._where()))
        if self.attached_trainer() is None and len(pending) >= self.max_pending_losses:
            self.check_losses()
        return True

    def _where(self) -> tuple[int, int, int] | None:
        """(step, epoch, batch) of the update under way, step in gdm's count (training batches, this one
        included; not Lightning's `global_step`, which counts optimizer steps); None in a loop without a trainer."""
        trainer = self.attached_trainer()
        if trainer is None:
            return None
        return trainer.fit_loop.total_batch_idx + 1, trainer.current_epoch, self.__dict__.get("_batch_idx", 0)

    @staticmethod
    def _describe(name: str, value: object, where: tuple[int, int, int] | None) -> str:
        at = f" at step {where[0]} (epoch {where[1]}, batch {where[2]})" if where is not None else ""
        return f"train/{name} is {value}{at}"

    def check_losses(self) -> None:
        """Read back the losses `loss_ok` kept since the last check and stop on the first non-finite one."""
        pending = self.__dict__.get("_pending_losses")
        if not pending:
            return  # every DDP rank runs the same updates: all return here, or none
        self._pending_losses = []
        # note: a CPU-GPU sync point, once per check
        values = torch.stack([loss.float().reshape(-1).mean() for _, loss, _ in pending]).cpu()
        finite = torch.isfinite(values)
        local_ok = bool(finite.all())
        # DDP: every rank takes the same decision, or the ranks that carry on would wait on the others.
        trainer = self.attached_trainer()
        all_ok = local_ok if trainer is None else trainer.strategy.reduce_boolean_decision(local_ok, all=True)
        if all_ok:
            return
        if local_ok:
            where = f"a training loss was not finite on another DDP rank between steps {pending[0][2][0]} and " \
                    f"{pending[-1][2][0]}"
        else:
            first = int((~finite).nonzero()[0])
            name, _, at = pending[first]
            where = self._describe(name, float(values[first]), at)
        self._stop(where, "")

    def _skip_decision(self, name: str, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss).all())  # note: a CPU-GPU sync point, per update
        if not hasattr(self, "_skipped_in_a_row"):
            self._skipped_in_a_row: dict[str, int] = {}  # per loss: a GAN's D and G updates alternate
        skipped = self._skipped_in_a_row
        # DDP: every rank takes the same decision, or their gradient all-reduces would wait on each other.
        trainer = self.attached_trainer()
        if trainer.strategy.reduce_boolean_decision(finite, all=True) if trainer is not None else finite:
            skipped[name] = 0
            return True
        value = "finite here but not on another DDP rank" if finite else loss.detach().float().mean().item()
        where = self._describe(name, value, self._where())
        skipped[name] = skipped.get(name, 0) + 1
        if skipped[name] <= self.nonfinite_policy.max_consecutive_skips:
            (self.print if trainer is not None else print)(f"{where}: update skipped (the non-finite loss "
                                                           "policy's action=skip)")
            return False
        self._stop(where, f" ({skipped[name]} in a row)")

    def _stop(self, where: str, repeat: str) -> None:
        keep = "no checkpoint was written yet"
        trainer = self.attached_trainer()
        if trainer is not None:
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"  # the Evaluator's
            keep = f"the last good checkpoint is {last}" if last.is_file() else keep
        other = "" if self.nonfinite_policy.action == "skip" else \
            ", or set the non-finite loss policy's action=skip to skip such updates"
        raise Diverged(f"{where}{repeat}: training stopped; {keep}. Lower the learning rates (in a new run: a "
                       f"resumed one keeps the saved optimizer settings){other}.")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._batch_idx = batch_idx  # named in the message of a loss read back later

    # The kept losses are read back every `check_every_n_steps` batches and before anything is evaluated or
    # saved, so a checkpoint never holds weights trained on a non-finite loss.
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.nonfinite_policy.check_every_n_steps == 0:
            self.check_losses()

    def on_validation_start(self) -> None:
        self.check_losses()

    def on_train_end(self) -> None:
        self.check_losses()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_losses()


def latent_noise(indices: Sequence[int] | torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """One standard-normal latent per sample index, each from its own seeded generator.

    Sample i gets the same latent whatever the batch size or the number of processes that share
    the work, so a metric over samples 0..N-1 does not depend on how it was batched.
    """
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    # torch's CPU generator keeps only 32 bits of a seed: hash (seed, index) into them properly.
    seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in indices]
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, dim)


def latent_labels(indices: Sequence[int] | torch.Tensor, class_probs: torch.Tensor, seed: int) -> torch.Tensor:
    """One class label per sample index, drawn from `class_probs` with the index's own seed, so a
    class-balanced metric does not depend on batching either."""
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    # A different stream from `latent_noise` (third entropy word), so labels and latents are independent.
    u = torch.tensor([float(np.random.SeedSequence([seed, i, 1]).generate_state(1)[0]) / 2**32 for i in indices])
    cdf = class_probs.detach().double().cpu().cumsum(0)
    return torch.searchsorted(cdf / cdf[-1], u.double(), right=True).clamp(max=len(cdf) - 1)


class GenerativeModule(NonFiniteGuard, L.LightningModule):
    """Base of all gdm models.

    A model says which batch keys it needs (`requires`), what it can do (the `Samples` and `Translates`
    capabilities above), and names the image grids worth looking at (`visuals`).
    Evaluation uses only these, so it works for every model family.
    """

    conditional: bool = False
    requires: frozenset[str] = frozenset({"image"})
    # Prefixes of state-dict entries only training uses (the GAN's LeCam averages): a run resumed or fine-tuned
    # with such an option switched on starts them anew, and one with it switched off drops them.
    optional_state: tuple[str, ...] = ()

    def match_optional_state(self, state_dict: dict) -> None:
        """Make a checkpoint's `state_dict` hold this model's `optional_state` entries: the missing ones as they
        are now, and none that this model lacks."""
        if not self.optional_state:
            return
        mine = {k: v for k, v in self.state_dict().items() if k.startswith(self.optional_state)}
        for key in [k for k in state_dict if k.startswith(self.optional_state) and k not in mine]:
            del state_dict[key]
        for key, value in mine.items():
            state_dict.setdefault(key, value)

    def upgrade_state(self, state_dict: dict) -> None:
        """A checkpoint's `state_dict` written by older gdm, changed in place to today's entries (a family
        overrides it where its state changed); called before any check or load of a checkpoint's weights."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.upgrade_state(checkpoint["state_dict"])
        self.match_optional_state(checkpoint["state_dict"])

    def adam(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float],
             clip: float | None) -> torch.optim.Adam:
        """Adam over `params`, fused (all parameters in one kernel: several times faster than per tensor) on CPU and
        CUDA unless the gradients are clipped (`clip`, an L2 norm): Lightning cannot unscale a fused optimizer's
        16-mixed gradients before clipping."""
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=self.device.type in ("cpu", "cuda") and not clip)

    def on_train_start(self) -> None:
        self.match_fused(self.trainer.optimizers)

    @staticmethod
    def match_fused(optimizers) -> None:
        """A resumed run's optimizers step as `adam` built them: Optimizer.load_state_dict restores the checkpoint's
        param groups whole, their `fused` flag too, which would keep a run saved fused fused when resumed with
        clipping (and an unfused one unfused)."""
        for optimizer in optimizers:
            fused = optimizer.defaults.get("fused")
            for group in optimizer.param_groups:
                if fused and not group.get("fused"):  # a fused step reads its step counts on the parameters' device
                    for param in group["params"]:
                        state = optimizer.state.get(param, {})
                        if "step" in state:
                            state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=param.device)
                group["fused"] = fused

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """A float tensor made outside Lightning's precision plugin (latents, example images) on this model's
        device and in its weights' dtype: bfloat16 under the bf16-true precision, else float32."""
        return x.to(self.device, self.dtype)

    @staticmethod
    @contextmanager
    def evaluating(net: nn.Module) -> Iterator[nn.Module]:
        """`net` in eval mode inside (dropout off, batch norm's running statistics), its mode restored after."""
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)

    def compile_nets(self, **options) -> None:
        """torch.compile each trained net in place (`nn.Module.compile`: the state dict keeps its keys, so
        checkpoints load either way). `options`: torch.compile's (mode, dynamic, ...)."""
        from torch.optim.swa_utils import AveragedModel

        for net in self.children():
            if any(True for _ in net.parameters()) and not isinstance(net, AveragedModel):
                net.compile(**options)

    def test_protocol(self) -> dict:
        """How the model's test step measures its values (an estimator, its settings): recorded in the protocol
        of each `test/...` value."""
        return {}

    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        """Named image sets in [-1, 1] to save and log as grids, each with its number of columns.
        `examples`: the first real images of the evaluation data ("val"; a translator's domains "A", "B")."""
        return {}
