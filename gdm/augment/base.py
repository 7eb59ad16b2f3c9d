"""What every augmentation of discriminator inputs is: the interface the adversarial models call."""

from __future__ import annotations

from torch import Tensor, nn


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
