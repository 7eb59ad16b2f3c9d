"""Trainer-level callbacks: crash checkpoints, RNG state and config in checkpoints, the NaN-loss policy."""
