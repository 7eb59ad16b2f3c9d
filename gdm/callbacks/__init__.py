"""Trainer-level callbacks: image grids, the run summary, the config inside checkpoints."""
