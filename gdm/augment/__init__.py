"""Differentiable augmentation of the discriminator's inputs: the small-data cure for GANs.

Real and generated images are augmented independently, each before the discriminator sees it, with
operations the generator's gradient flows through (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"; Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data"). `model.augment` picks one:
- `diffaugment`: the DiffAugment policy `model.augment_policy` (e.g. `color,translation,cutout`),
  applied to every image (`gdm.augment.diffaugment`);
- `ada`: the ADA pipeline, each operation applied with a probability p that a controller moves
  towards the discriminator's overfitting target (`gdm.augment.ada`);
- `null`: none.
"""

from __future__ import annotations

from gdm.augment.base import Augment
from gdm.errors import GdmError

AUGMENTS = ("diffaugment", "ada")


def build_augment(augment: str | None, policy: str = "color,translation,cutout", ada_target: float = 0.6,
                  ada_interval: int = 4, ada_kimg: float = 500.0,
                  channels_per_image: int | None = None) -> Augment | None:
    """The augmentation named by `model.augment` (None for `null`). Raises GdmError on an unknown name
    or policy, or ADA settings out of range."""
    # Checked whatever model.augment is, so a wrong value is never silently ignored.
    from gdm.augment.ada import AdaptiveAugment

    AdaptiveAugment.check_settings(ada_target, ada_interval, ada_kimg)
    if augment in (None, "none", "null", False):
        return None
    if augment == "diffaugment":
        from gdm.augment.diffaugment import DiffAugment

        return DiffAugment(policy, channels_per_image)
    if augment == "ada":
        return AdaptiveAugment(target=ada_target, interval=ada_interval, kimg=ada_kimg,
                               channels_per_image=channels_per_image)
    raise GdmError(f"model.augment='{augment}' is not a known augmentation; choose one of "
                   f"{', '.join(AUGMENTS)}, or null for none.")
