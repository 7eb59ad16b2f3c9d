"""LightningModules, one per model family. They know nothing of Hydra or of data modules."""
