"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"; reference code NVlabs/stylegan2-ada-pytorch, training/augment.py and
training/training_loop.py).

The pipeline is the paper's `bgc` (blit, geometric, colour), each operation applied to each image
independently with probability p, with the reference's strengths:
- blit: x-flip, rotation by a multiple of 90 degrees, integer translation up to 0.125 of the side;
- geometric: isotropic scale 2^N(0, 0.2), rotation U(-180, 180) degrees (probability 1 - sqrt(1 - p),
  twice), anisotropic scale 2^N(0, 0.2), fractional translation N(0, 0.125) of the side;
- colour: brightness + N(0, 0.2), contrast x 2^N(0, 0.5), luma flip, hue rotation U(-180, 180) degrees,
  saturation x 2^N(0, 1) (luma flip, hue and saturation need three-channel images).
The geometric operations compose into one affine matrix applied with one bilinear `grid_sample`
(reflection padding); the reference upsamples with a wavelet filter first to limit aliasing, which
this implementation leaves out.

p starts at 0 and moves every `interval` batches by sign(r_t - target) * images / (kimg * 1000), where
r_t = E[sign(D(augmented real))] over those batches (target 0.6, interval 4, kimg 500 in the paper):
p rises while the discriminator is too sure of the real images, and falls otherwise. p, r_t and the
running sums are buffers, so checkpoints keep them and a resumed run continues the same p; every step
of the controller stays on the device (no host synchronisation).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import Tensor

from gdm.augment.base import Augment
from gdm.option_types import Probability, checked


def _applied(n: int, p: Tensor, device: torch.device) -> Tensor:
    """(n,) bool: which images get an operation of probability p (a 0-dim tensor)."""
    return torch.rand(n, device=device) < p


def _matrix(n: int, device: torch.device, rows: list[list[Tensor | float]]) -> Tensor:
    """(n, k, k) matrices from rows of per-image (n,) tensors or constants."""
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).expand(n)
                                     for v in row], dim=-1) for row in rows], dim=-2)


def _translate(tx: Tensor, ty: Tensor) -> Tensor:
    n, one, zero = tx.shape[0], 1.0, 0.0
    return _matrix(n, tx.device, [[one, zero, tx], [zero, one, ty], [zero, zero, one]])


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    return _matrix(sx.shape[0], sx.device, [[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def _rotate(theta: Tensor) -> Tensor:
    c, s = theta.cos(), theta.sin()
    return _matrix(theta.shape[0], theta.device, [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def geometric_matrix(n: int, height: int, width: int, p: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(n, 3, 3) matrices taking output pixel coordinates (origin at the image centre) to input ones,
    and the (n,) mask of images that got any operation."""
    g = torch.eye(3, device=device).expand(n, 3, 3)
    touched = torch.zeros(n, dtype=torch.bool, device=device)

    def maybe(values: Tensor, identity: float, prob: Tensor) -> Tensor:
        """values (..., n) where the operation is drawn (one draw per image), else the identity's value."""
        nonlocal touched
        on = _applied(n, prob, device)
        touched = touched | on
        return torch.where(on, values, torch.full_like(values, identity))

    # Blit: x-flip, rotation by k * 90 degrees, integer translation.
    flip = maybe(1 - 2 * torch.randint(2, (n,), device=device).float(), 1.0, p)
    g = g @ _scale(flip, torch.ones_like(flip))
    quarter = maybe(torch.randint(4, (n,), device=device).float(), 0.0, p)
    g = g @ _rotate(-quarter * math.pi / 2)
    t = maybe((torch.rand(2, n, device=device) * 2 - 1) * 0.125, 0.0, p)
    g = g @ _translate(-torch.round(t[0] * width), -torch.round(t[1] * height))
    # Geometric: isotropic scale, rotation, anisotropic scale, rotation, fractional translation.
    s = maybe(torch.exp2(torch.randn(n, device=device) * 0.2), 1.0, p)
    g = g @ _scale(1 / s, 1 / s)
    p_rot = 1 - torch.sqrt((1 - p).clamp(min=0))  # two chances: p overall
    g = g @ _rotate(-maybe((torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0, p_rot))
    s = maybe(torch.exp2(torch.randn(n, device=device) * 0.2), 1.0, p)
    g = g @ _scale(1 / s, s)
    g = g @ _rotate(-maybe((torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0, p_rot))
    t = maybe(torch.randn(2, n, device=device) * 0.125, 0.0, p)
    g = g @ _translate(-t[0] * width, -t[1] * height)
    return g, touched


def color_matrix(n: int, p: Tensor, device: torch.device, rgb: bool) -> Tensor:
    """(n, 4, 4) matrices acting on (r, g, b, 1) in [-1, 1] units."""
    c = torch.eye(4, device=device).expand(n, 4, 4)
    eye = torch.eye(4, device=device)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the luma axis
    vv = torch.outer(v, v)

    def maybe(values: Tensor, identity: float) -> Tensor:
        return torch.where(_applied(n, p, device), values, torch.full_like(values, identity))

    b = maybe(torch.randn(n, device=device) * 0.2, 0.0)
    shift = eye.expand(n, 4, 4).clone()
    shift[:, :3, 3] = b[:, None]
    c = shift @ c
    k = maybe(torch.exp2(torch.randn(n, device=device) * 0.5), 1.0)
    c = torch.diag_embed(torch.stack([k, k, k, torch.ones_like(k)], dim=-1)) @ c
    if rgb:
        flip = maybe(torch.randint(2, (n,), device=device).float(), 0.0)
        c = (eye - 2 * vv * flip[:, None, None]) @ c
        theta = maybe((torch.rand(n, device=device) * 2 - 1) * math.pi, 0.0)
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
        cross = torch.tensor([[0.0, -v[2], v[1], 0], [v[2], 0, -v[0], 0], [-v[1], v[0], 0, 0], [0, 0, 0, 0]],
                             device=device)
        rot = cos * (eye - vv) + sin * cross + vv  # Rodrigues' rotation about the luma axis
        rot[:, 3, 3] = 1.0
        c = rot @ c
        s = maybe(torch.exp2(torch.randn(n, device=device)), 1.0)[:, None, None]
        c = (vv + (eye - vv) * s) @ c
    return c


def augment(x: Tensor, p: Tensor, channels_per_image: int | None = None) -> Tensor:
    """The `bgc` pipeline with probability p (0-dim tensor) on x (B, C, H, W); C = G x channels_per_image
    images stacked on channels share their transform. Images that draw no operation are returned as is."""
    n, channels, height, width = x.shape
    g, touched = geometric_matrix(n, height, width, p, x.device)
    # Pixel coordinates centred on the image <-> grid_sample's normalised [-1, 1] (align_corners=False).
    to_pixels = torch.diag(torch.tensor([width / 2, height / 2, 1.0], device=x.device))
    theta = (torch.linalg.inv(to_pixels) @ g @ to_pixels)[:, :2, :]
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = torch.where(touched[:, None, None, None], warped, x)

    per_image = channels_per_image or channels
    c = color_matrix(n, p, x.device, rgb=per_image == 3).to(x.dtype)
    groups = x.reshape(n, channels // per_image, per_image, height * width)
    if per_image == 3:
        groups = c[:, None, :3, :3] @ groups + c[:, None, :3, 3:]
    else:  # the reference's rule for grey images, channel by channel
        grey = c[:, :3, :].mean(dim=1)
        groups = groups * grey[:, None, None, :3].sum(-1, keepdim=True) + grey[:, None, None, 3:]
    return groups.reshape(x.shape)


class AdaptiveAugment(Augment):
    """ADA with its controller. Input and output (B, C, H, W); `p` (0-dim buffer) the current probability."""

    @checked
    def __init__(self, ada_target: Annotated[Probability, Field(
                     description="the E[sign(D(real))] that p moves towards; the paper uses 0.6")] = 0.6,
                 ada_interval: Annotated[int, Strict(), Field(
                     ge=1, description="batches between p updates; the paper uses 4")] = 4,
                 ada_kimg: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False, description=(
                     "thousands of images for p to go from 0 to 1; the paper uses 500"))] = 500.0,
                 channels_per_image: int | None = None):
        super().__init__(channels_per_image)
        # StyleGAN2-ADA's names for the settings; the controller's own below
        self.target, self.interval, self.kimg = ada_target, ada_interval, ada_kimg
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("rt", torch.zeros(()))  # the last r_t
        # Running sums over the current interval: sum of sign(D(real)), logits, images.
        self.register_buffer("sums", torch.zeros(3))

    def forward(self, x: Tensor) -> Tensor:
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return augment(x, self.p, self.channels_per_image).contiguous(memory_format=layout)

    @torch.no_grad()
    def observe(self, real_logits: Tensor, images: int | None = None) -> None:
        """Add one batch's logits on augmented reals (`images` images, default the logits' first
        dimension); every `interval` batches, move p."""
        logits = real_logits.detach().float()
        images = logits.shape[0] if images is None else images
        self.sums += torch.stack([logits.sign().sum(), logits.new_tensor(logits.numel()), logits.new_tensor(images)])
        batches = int(self._batches) + 1 if hasattr(self, "_batches") else 1
        self._batches = batches
        if batches % self.interval:
            return
        sums = self.sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)  # r_t and the image count over every rank, as the reference does
        self.rt.copy_(sums[0] / sums[1])
        self.p.copy_((self.p + torch.sign(self.rt - self.target) * sums[2] / (self.kimg * 1000)).clamp(0, 1))
        self.sums.zero_()

    def get_extra_state(self) -> dict:
        return {"batches": getattr(self, "_batches", 0)}

    def set_extra_state(self, state: dict) -> None:
        self._batches = int(state.get("batches", 0))

    def logs(self) -> dict[str, Tensor]:
        return {"train/ada_p": self.p.detach(), "train/ada_rt": self.rt.detach()}

    def extra_repr(self) -> str:
        return f"target={self.target}, interval={self.interval}, kimg={self.kimg}"
