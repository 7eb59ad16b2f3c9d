"""Weight initialisation helpers."""

from torch import nn


def init_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN / CycleGAN init: conv and linear weights ~ N(0, std), norm scales ~ N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module
