"""Features of real images, paid for once: kept in memory for the run and cached on disk across runs.

The cache file is named by the SHA-256 of its key: what determines the features — the dataset's identity
(`fingerprint()` of the split's dataset: the bytes of an in-memory set, or the paths, sizes and
modification times of image files, and the transform), the split, the feature protocol and the
quantization. A changed file, transform or feature network is another key. A file is trusted only when
its stored key equals the wanted one and its checksum matches its features: a corrupt or half-written
file is recomputed, never used. Files are written atomically (temporary name, then rename).

    ~/.cache/gdm/real_features/<sha>.pt     (metrics.cache_dir=DIR moves it; metrics.cache_dir=null: off)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)
FORMAT = 1


def canonical(value) -> str:
    """The JSON text of `value` with sorted keys: equal values give equal text (cache keys and protocol ids
    hash it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def features_sha256(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest()


class RealFeatureCache:
    def __init__(self, cache_dir: str | Path | None):
        self.dir = Path(cache_dir).expanduser() / "real_features" if cache_dir else None
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0  # disk reads and computations, for the log and the benchmark

    def path(self, key: dict) -> Path | None:
        if self.dir is None:
            return None
        return self.dir / f"{hashlib.sha256(canonical(key).encode()).hexdigest()[:32]}.pt"

    def load(self, key: dict) -> torch.Tensor | None:
        """The cached features for `key`, or None when absent, unreadable, of another key or corrupt."""
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            features = saved["features"]
            if saved.get("format") != FORMAT or canonical(saved["key"]) != canonical(key):
                raise ValueError("its key differs")
            if features_sha256(features) != saved["sha256"]:
                raise ValueError("its checksum does not match")
        except Exception as err:  # truncated, not a torch file, tampered with: recompute
            log.warning(f"real-feature cache {path} is unusable ({type(err).__name__}: {err}); recomputing it.")
            return None
        return features

    def save(self, key: dict, features: torch.Tensor) -> None:
        path = self.path(key)
        if path is None:
            return
        features = features.detach().float().cpu().contiguous()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            torch.save({"format": FORMAT, "key": key, "features": features, "sha256": features_sha256(features)}, tmp)
            os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
        except OSError as err:  # a read-only or full disk costs speed, not the run
            log.warning(f"could not write the real-feature cache {path} ({err}); continuing without it.")

    def get(self, key: dict | None, compute: Callable[[], torch.Tensor],
            all_agree: Callable[[bool], bool] = lambda ok: ok, writer: bool = True) -> torch.Tensor:
        """Features for `key`: from memory, from disk, or computed (and then saved by the `writer` process).
        `key=None`: the data has no fingerprint; computed once per run, never saved. Under DDP every process
        must take the same branch (computing is collective): `all_agree(found)` is the strategy's AND."""
        name = canonical(key)
        if name in self.memory:
            return self.memory[name]
        features = self.load(key) if key is not None else None
        if all_agree(features is not None):
            self.hits += 1
        else:
            self.misses += 1
            features = compute()
            if key is not None and writer:
                self.save(key, features)
        self.memory[name] = features
        return features


def dataset_fingerprint(dataset) -> dict | None:
    """What identifies a dataset's images for the cache; None when it cannot say (then nothing is cached)."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = dataset_fingerprint(dataset.dataset)
        if inner is None:
            return None
        indices = hashlib.sha256(canonical(list(map(int, dataset.indices))).encode()).hexdigest()
        return {"subset_of": inner, "indices_sha256": indices}
    method = getattr(dataset, "fingerprint", None)
    return method() if method is not None else None
