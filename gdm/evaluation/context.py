"""What a metric is given and what it returns, the protocol each value carries, and how an evaluation is
split across DDP processes.

What a metric sees of one evaluation: the model, the data's splits, the feature network, and helpers
that do the shared work once: this process's share of a split or of the sample sequence, the whole
feature set gathered from every process, real features from the cache.

Metrics never touch the trainer: a metric is a plain object called with an `Evaluation`.

Protocols: how a metric value was computed, so that two values are only compared when they were
measured the same way. A protocol is a plain JSON-serialisable dict: the feature network and the SHA-256
of its weights file, the input resize, the quantization, the numbers of generated and real images, the real split
and its data, the sample seed, how the model drew its samples (`sampling`: the sampler, its steps, the NFE),
and the library versions. `protocol_id` names it by a short hash of everything but the versions (a library
upgrade is reported, not treated as another protocol) and the measured fields (`MEASURED`: the sampling cost,
in seconds per 1,000 samples on the device that ran; an adaptive solver's NFE, a float mean it measured): a
figure of this machine, not a setting. `differences` lists what two protocols disagree on. `MODEL_FIELDS`
say how the model under test was asked to produce what is measured (a conditional model: with which labels; an
iterative model: with which sampler and steps; a likelihood: by which estimator, e.g. the VAE's IWAE bound or
the flow's ODE), not how it is measured: `measurement_id` leaves them out, so a GAN, a conditional GAN and a
diffusion model at any budget scored the same way, or a VAE's and a flow's bits per dimension on the same
dequantized images, can be compared (`gdm.compare`, sweeps).

Sharding: split an evaluation across DDP processes by index, and put the pieces back in index order.

Process r of w handles items r, r + w, r + 2w, ... of a dataset or of the generated sample sequence;
`gather_rows` reassembles every process's rows into the one (N, ...) tensor a single process would
have computed, on every process. Metrics then run on whole feature sets, so a value does not depend on
the number of processes (tested: 2 processes = 1 process on the same checkpoint).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from gdm.evaluation.real_features import RealFeatureCache, canonical, dataset_fingerprint
from gdm.images import to_uint8

log = logging.getLogger(__name__)

# Every image that is scored, saved or logged goes through gdm.images.to_uint8 first.
QUANTIZATION = "uint8: round((x + 1) * 127.5), as the saved PNGs"
VERSIONED = ("gdm", "torch", "torchmetrics", "torch-fidelity", "timm")
MODEL_FIELDS = ("conditional_labels", "sampling", "estimator")
MEASURED = ("sampling_cost",)  # measured on the machine that ran: recorded, never part of the id


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


def protocol_id(protocol: dict) -> str:
    """A short name for a protocol: 12 hex digits of the SHA-256 of all its fields but the versions and the
    measured ones (`MEASURED`; a float `sampling.nfe`, the mean an adaptive solver measured: its tolerances are
    the setting, and a new evaluation must not count as another protocol)."""
    fields = {k: v for k, v in protocol.items() if k not in ("versions", "id", *MEASURED)}
    sampling = fields.get("sampling")
    if isinstance(sampling, dict) and isinstance(sampling.get("nfe"), float):
        fields["sampling"] = {k: v for k, v in sampling.items() if k != "nfe"}
    return hashlib.sha256(canonical(fields).encode()).hexdigest()[:12]


def measurement_id(protocol: dict) -> str:
    """The protocol's id without the fields that describe how the model produced what is measured
    (`MODEL_FIELDS`)."""
    return protocol_id({k: v for k, v in protocol.items() if k not in MODEL_FIELDS})


def how_produced(field: str) -> bool:
    """Whether a dotted field name of `differences` (`sampling.steps`, `estimator.atol`) says how the model produced
    what is measured (`MODEL_FIELDS`)."""
    return field.split(".")[0] in MODEL_FIELDS


def with_id(protocol: dict) -> dict:
    """The protocol with its library versions and its `id` filled in."""
    full = {**protocol, "versions": versions()}
    full["id"] = protocol_id(full)
    return full


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields in which two protocols differ (versions included; `id` and the measured
    fields left out)."""
    keys = sorted((set(a) | set(b)) - {"id", *MEASURED})
    found = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append(f"{prefix}{key}")
    return found


def sampling_words(sampling: dict) -> str:
    """A model's `sampling_protocol()` for a reader: 'heun, 18 steps, NFE 35' (NFE: the net's forward passes
    per sample; an adaptive solver's measured mean to 4 digits), and the noise grid where the sampler records one
    ('unipc, 5 steps, NFE 5, grid uniform in sigma / (1 + sigma)')."""
    steps = f", {sampling['steps']} steps" if sampling.get("steps") is not None else ""
    nfe = sampling.get("nfe")
    nfe = f"{nfe:.4g}" if isinstance(nfe, float) else nfe
    grid = f", grid {sampling['grid']}" if sampling.get("grid") else ""
    return f"{sampling.get('sampler')}{steps}, NFE {nfe}{grid}"


def describe(protocol: dict) -> str:
    """One line for a reader: features (weights hash), resize, direction, sample counts, split, seed, sampler
    and NFE, a likelihood's estimator (its solver's tolerance), device."""
    features = protocol.get("features") or {}
    parts = []
    if features:
        sha = str(features.get("weights_sha256", ""))[:12]
        parts.append(f"features {features.get('name')} (sha256 {sha})")
        resize = features.get("resize") or {}
        if resize:
            parts.append(f"resize {resize.get('size')} {resize.get('method')} antialias={resize.get('antialias')}")
    for key in ("direction", "num_generated", "num_real", "real_split", "split", "sample_seed", "k", "device"):
        if key in protocol:
            parts.append(f"{key} {protocol[key]}")
    if protocol.get("sampling"):
        parts.append(f"sampler {sampling_words(protocol['sampling'])}")
    estimator = protocol.get("estimator") or {}
    if estimator:
        solver = f", {estimator['solver']} atol {estimator.get('atol')} rtol {estimator.get('rtol')}" \
            if "solver" in estimator else ""
        parts.append(f"estimator {estimator.get('method')}{solver}")
    return ", ".join(parts) + f" [protocol {protocol.get('id', protocol_id(protocol))}]"


def shard_indices(n: int, rank: int, world_size: int) -> torch.Tensor:
    """The indices of `n` items this process handles: rank, rank + world_size, ..."""
    return torch.arange(rank, n, world_size)


def shard_loader(dataset: Dataset, rank: int, world_size: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """This process's share of `dataset`, in order. Its own generator: iterating a DataLoader draws a seed,
    and evaluating must not change the training run's RNG stream."""
    mine = Subset(dataset, shard_indices(len(dataset), rank, world_size).tolist())
    return DataLoader(mine, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator())


def gather_rows(rows: torch.Tensor, n: int, rank: int, world_size: int,
                all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """All processes' rows (this one's: its `shard_indices(n, ...)` in order) as one (n, ...) tensor in
    index order, on every process. `all_gather` is the strategy's (tensor -> (world_size, ...) tensor)."""
    if world_size == 1:
        return rows
    per_rank = -(-n // world_size)  # all_gather needs equal shapes: pad to the largest share
    padded = rows.new_zeros((per_rank, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = all_gather(padded)  # (world_size, per_rank, ...)
    out = rows.new_empty((n, *rows.shape[1:]))
    for r in range(world_size):
        count = len(range(r, n, world_size))
        out[r::world_size] = gathered[r, :count].to(out.device)
    return out


def device_name(device: torch.device) -> str:
    """The device samples were timed on: the GPU's name, else the CPU and its torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    return f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


class SamplingClock:
    """Seconds spent inside a model's `generate` calls alone (features and metrics excluded), timed with the
    device synchronized before each clock read (CUDA runs kernels asynchronously: the clock would stop before
    the work does)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # note: a CPU-GPU sync point, twice per timed call

    def __call__(self, generate: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        self._sync()
        start = time.perf_counter()
        images = generate(*args, **kwargs)
        self._sync()
        self.seconds += time.perf_counter() - start
        return images


@dataclass
class MetricResult:
    """A metric's output: scalar values by logged name, the protocol of each value, and image grids
    ((N, C, H, W) images in [-1, 1], columns) to save and log."""

    values: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, dict] = field(default_factory=dict)
    grids: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)

    def update(self, other: MetricResult) -> None:
        self.values.update(other.values)
        self.protocols.update(other.protocols)
        self.grids.update(other.grids)


@dataclass
class Evaluation:
    model: nn.Module
    data: object  # a SplitDataModule: metrics read its named splits
    features: nn.Module
    cache: RealFeatureCache
    device: torch.device
    rank: int = 0
    world_size: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    all_agree: Callable[[bool], bool] = lambda ok: ok
    batch_size: int = 250
    num_workers: int = 0

    @property
    def feature_protocol(self) -> dict:
        return self.features.protocol()

    def split(self, name: str) -> Dataset:
        return self.data.split(name)

    def loader(self, dataset: Dataset) -> DataLoader:
        """This process's share of `dataset`, in index order."""
        return shard_loader(dataset, self.rank, self.world_size, self.batch_size, self.num_workers)

    def shard(self, n: int) -> torch.Tensor:
        """This process's indices among n (samples or images)."""
        return shard_indices(n, self.rank, self.world_size)

    def gather(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's rows of an n-item computation, as one tensor in index order."""
        return gather_rows(rows, n, self.rank, self.world_size, self.all_gather)

    def slowest(self, seconds: float) -> float:
        """The largest of every process's `seconds`: the wall time of work they share out, on every process."""
        if self.world_size == 1:
            return seconds
        return float(self.all_gather(torch.tensor(seconds, dtype=torch.float64, device=self.device)).max())

    @torch.no_grad()
    def featurize(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> float32 features, after the quantization of the saved PNGs."""
        return self.features(to_uint8(images).to(self.device)).float()

    def real_features(self, split: str) -> torch.Tensor:
        """Features of every image of `split` (all processes), from the cache when it has them."""
        dataset = self.split(split)
        fingerprint = dataset_fingerprint(dataset)
        key = None if fingerprint is None else {
            "data": fingerprint, "split": split, "features": {k: v for k, v in self.feature_protocol.items()},
            "quantization": QUANTIZATION}

        def compute() -> torch.Tensor:
            rows = [self.featurize(batch["image"]) for batch in self.loader(dataset)]
            mine = torch.cat(rows) if rows else torch.empty(0, self.features.num_features, device=self.device)
            return self.gather(mine, len(dataset))

        features = self.cache.get(key, compute, self.all_agree, writer=self.rank == 0)
        return features.to(self.device)
