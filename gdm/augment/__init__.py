"""Differentiable augmentation of the discriminator's inputs: the small-data cure for GANs.

Real and generated images are augmented independently, each before the discriminator sees it, with
operations the generator's gradient flows through (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"; Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data"). `build_augment(augment, ...)` picks one:
- `diffaugment`: the DiffAugment policy `augment_policy` (e.g. `color,translation,cutout`),
  applied to every image (`gdm.augment.diffaugment`);
- `ada`: the ADA pipeline, each operation applied with a probability p that a controller moves
  towards the discriminator's overfitting target (`gdm.augment.ada`);
- `null`: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from torch import Tensor, nn

from gdm.option_types import checked

AUGMENTS = ("diffaugment", "ada")


def _operations(policy: object) -> object:
    # "color, translation" (a quoted string on the command line) or a list of the same names
    if isinstance(policy, str):
        return [name.strip() for name in policy.split(",") if name.strip()]
    return [str(name).strip() for name in policy] if isinstance(policy, Sequence) else policy


Policy = Annotated[list[Literal["color", "translation", "cutout"]], BeforeValidator(_operations), Field(
    min_length=1, description="DiffAugment's operations, comma-separated (quoted on the command line) or a "
                              "list; Zhao et al. 2020 use color,translation,cutout")]
AugmentName = Annotated[Literal["diffaugment", "ada"] | None, Field(
    description="what the discriminator sees of real and fake images; null: the images as they are")]


class Augment(nn.Module):
    """An augmentation of discriminator inputs (B, C, H, W) in [-1, 1] (values may leave the range, as
    in the papers). `channels_per_image` < C: the tensor holds several images side by side on the channel
    axis (pix2pix's (input, output) pairs), which get the same random transform, colour included."""

    def __init__(self, channels_per_image: int | None = None):
        super().__init__()
        self.channels_per_image = channels_per_image

    def observe(self, real_logits: Tensor, images: int) -> None:
        """The discriminator's logits on the augmented real images of one training batch of `images`
        images (ADA's r_t; a PatchGAN gives several logits per image)."""

    def logs(self) -> dict[str, Tensor]:
        """Values worth logging (detached tensors)."""
        return {}


@checked
def build_augment(augment: AugmentName, augment_policy: object = "color,translation,cutout",
                  ada_target: object = 0.6, ada_interval: object = 4, ada_kimg: object = 500.0,
                  channels_per_image: int | None = None) -> Augment | None:
    """The augmentation `augment` (None for null), with the settings of that one only: the policy is
    checked by DiffAugment, the ada_* settings by ADA (a ValidationError naming the parameter)."""
    if augment == "diffaugment":
        from gdm.augment.diffaugment import DiffAugment

        return DiffAugment(augment_policy, channels_per_image)
    if augment == "ada":
        from gdm.augment.ada import AdaptiveAugment

        return AdaptiveAugment(ada_target=ada_target, ada_interval=ada_interval, ada_kimg=ada_kimg,
                               channels_per_image=channels_per_image)
    return None
