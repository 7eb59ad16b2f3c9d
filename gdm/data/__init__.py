"""LightningDataModules and datasets. Data modules know nothing of models.

Every dataset item is a dict: {"image": float tensor (C, H, W) in [-1, 1], "label": int (when labelled)}.
A data module says what its batches hold in `provides`, so a task can check a model's needs up front.
"""
