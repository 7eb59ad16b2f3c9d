"""How a metric value was computed: its protocol, so that two values are only compared when they were
measured the same way.

A protocol is a plain JSON-serialisable dict: the feature network and the SHA-256 of its weights file,
the input resize, the quantization, the numbers of generated and real images, the real split and its
data, the sample seed, and the library versions. `protocol_id` names it by a short hash of everything
but the versions (a library upgrade is reported, not treated as another protocol); `differences` lists
what two protocols disagree on. `SAMPLING_FIELDS` say how the model under test was asked to sample (a
conditional model: with which labels), not how it is measured: `measurement_id` leaves them out, so an
unconditional and a conditional model scored the same way can be compared (`gdm.compare`, sweeps).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path

# Every image that is scored, saved or logged goes through gdm.images.to_uint8 first.
QUANTIZATION = "uint8: round((x + 1) * 127.5), as the saved PNGs"
VERSIONED = ("gdm", "torch", "torchmetrics", "torch-fidelity", "timm")
SAMPLING_FIELDS = ("conditional_labels",)


@cache
def versions() -> dict[str, str]:
    """Installed versions of the packages a metric value depends on ('absent' when not installed)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, hex; computed once per (path, size, modification time) in a process."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def protocol_id(protocol: dict) -> str:
    """A short name for a protocol: 12 hex digits of the SHA-256 of all its fields but the versions."""
    fields = {k: v for k, v in protocol.items() if k not in ("versions", "id")}
    return hashlib.sha256(canonical(fields).encode()).hexdigest()[:12]


def measurement_id(protocol: dict) -> str:
    """The protocol's id without the fields that describe the model's sampling (`SAMPLING_FIELDS`)."""
    return protocol_id({k: v for k, v in protocol.items() if k not in SAMPLING_FIELDS})


def with_id(protocol: dict) -> dict:
    """The protocol with its library versions and its `id` filled in."""
    full = {**protocol, "versions": versions()}
    full["id"] = protocol_id(full)
    return full


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields in which two protocols differ (versions included, `id` left out)."""
    keys = sorted((set(a) | set(b)) - {"id"})
    found = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append(f"{prefix}{key}")
    return found


def describe(protocol: dict) -> str:
    """One line for a reader: features (weights hash), resize, direction, sample counts, split, seed."""
    features = protocol.get("features") or {}
    parts = []
    if features:
        sha = str(features.get("weights_sha256", ""))[:12]
        parts.append(f"features {features.get('name')} (sha256 {sha})")
        resize = features.get("resize") or {}
        if resize:
            parts.append(f"resize {resize.get('size')} {resize.get('method')} antialias={resize.get('antialias')}")
    for key in ("direction", "num_generated", "num_real", "real_split", "split", "sample_seed", "k"):
        if key in protocol:
            parts.append(f"{key} {protocol[key]}")
    return ", ".join(parts) + f" [protocol {protocol.get('id', protocol_id(protocol))}]"
