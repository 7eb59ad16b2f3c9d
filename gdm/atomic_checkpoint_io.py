"""Checkpoint writes that a crash cannot half-finish: write `<name>.tmp-<pid>` next to the target, flush it
to disk, then rename it over the target (atomic within one filesystem).

Lightning's own `_atomic_save` goes through an fsspec transaction whose temporary file lives in the system
temp dir; when that is another filesystem than the run directory (common on clusters) the final move is a
copy, and a kill during the copy leaves a truncated `last.ckpt` in place of the good one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
