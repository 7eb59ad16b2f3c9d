"""Differentiable augmentation of the discriminator's inputs: the small-data cure for GANs.

Real and generated images are augmented independently, each before the discriminator sees it, with
operations the generator's gradient flows through (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"; Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data"). `gdm.models.adversarial.build_augment(augment, ...)` picks one:
- `diffaugment`: the DiffAugment policy `augment_policy` (e.g. `color,translation,cutout`),
  applied to every image (`gdm.augment.diffaugment`);
- `ada`: the ADA pipeline, each operation applied with a probability p that a controller moves
  towards the discriminator's overfitting target (`gdm.augment.ada`);
- `null`: none.
"""
