"""gdm: an experiment framework for deep generative models (Lightning + Hydra + torchmetrics FID + W&B)."""

__version__ = "0.1.0"
