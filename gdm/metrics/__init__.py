"""Sample-quality metrics: FID through torchmetrics, with Inception or domain feature networks."""
