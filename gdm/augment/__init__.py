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

from typing import Annotated, Literal

from pydantic import Field

from gdm.augment.base import Augment
from gdm.option_types import checked

AUGMENTS = ("diffaugment", "ada")


AugmentName = Annotated[Literal["diffaugment", "ada"] | None, Field(
    description="what the discriminator sees of real and fake images; null: the images as they are")]


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
