"""The quality of a sampling model's images, from one feature pass over its samples and a real split.

At each evaluation: samples 0..num_samples-1 of the model's seeded sequence (`seed`), quantized as the
saved PNGs, through the run's feature network, against the features of every
image of `real_split` (cached across runs):
- `val/fid_<features>`: Fréchet distance (Heusel et al. 2017), torchmetrics' formula;
- `val/kid_<features>` (+ `_std`): kernel distance (Bińkowski et al. 2018), when `kid_subset_size` is set
  (task=eval sets it);
- `val/precision_<f>`, `val/recall_<f>` (Kynkäänniemi et al. 2019, k = `precision_recall_k` = 3) and
  `val/density_<f>`, `val/coverage_<f>` (Naeem et al. 2020, k = `density_coverage_k` = 5): fidelity and
  diversity apart;
- `val/copies_<f>`: the fraction of samples closer to a training image than that image's own nearest
  training neighbour (likely copies; `gdm.metrics.feature_metrics`), and a grid `nearest_<f>` whose rows are
  a sample and its `nearest_k` nearest training images in the feature space, for `nearest_samples` samples.
A conditional model's samples draw class-balanced labels (the training split's class frequencies).
Each protocol records how the samples were drawn (`sampling`: the model's sampler, steps and NFE, read after
generating so that an adaptive solver's measured NFE is right) and what drawing them cost (`sampling_cost`:
seconds per 1,000 samples of the `generate` calls alone, on the named device; under DDP the slowest process,
the wall time). The cost is measured, so it is kept out of the protocol id, and logged as
`val/sample_seconds_per_1000` beside the metrics. The metric values do not depend on batch size or on the
number of DDP processes (samples are per-index seeded and features gathered in index order). Each value comes
with its protocol (`gdm.evaluation.context`).

A latent diffusion or flow model (one with a `latent` autoencoder) also gets, beside its FID, the two baselines of
its autoencoder: `val/fid_<f>_reconstructions`, the FID of the autoencoder's reconstructions of the real split
(the ceiling a latent model cannot beat: a perfect latent model decodes to these), and `val/fid_<f>_autoencoder`,
the FID of the autoencoder's own samples (a VAE's prior samples, an AE's from its fitted Gaussian), drawn with
the same sample indices and seed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, Strict

from gdm.errors import GdmError
from gdm.evaluation.context import QUANTIZATION, Evaluation, MetricResult, SamplingClock, device_name, with_id
from gdm.metrics.feature_metrics import (
    copy_fraction,
    density_coverage,
    frechet_distance,
    kernel_distance,
    nearest_neighbours,
    precision_recall,
)
from gdm.models.base import Samples
from gdm.option_types import Count, Flag, NonNegativeInt, checked

Split = Annotated[Literal["train", "val", "test"], Field(description="the split of the real images")]
NumSamples = Annotated[int, Strict(), Field(ge=2, description=(
    "generated images; FID needs 2 at least, as the covariance of one image is undefined; 1000 or more for a "
    "stable value, 50k in the published FIDs"))]
SubsetSize = Annotated[int, Strict(), Field(ge=2)]
COST = "val/sample_seconds_per_1000"


def sampled_labels(model) -> str | None:
    """How a conditional model's samples get their labels, for the metric's protocol."""
    if getattr(model, "clusters", None) is not None:
        return "k-means cluster frequencies of the training split"
    return "training-split class frequencies" if model.conditional else None


class SampleQuality:
    families = ("fid", "kid", "precision", "recall", "density", "coverage", "copies",  # val/<family>_...
                "sample_seconds_per_1000")

    @checked
    def __init__(self, num_samples: NumSamples = 1000, real_split: Split = "train",
                 seed: Annotated[NonNegativeInt, Field(description="the seed of the sample sequence")] = 0,
                 kid_subset_size: Annotated[SubsetSize | None, Field(
                     description="KID's subset size, 1000 in Binkowski et al. 2018; null: no KID")] = None,
                 kid_subsets: Annotated[Count, Field(description="KID's subsets, 100 in Binkowski et al.")] = 100,
                 precision_recall_k: Annotated[Count | None, Field(
                     description="k of improved precision / recall, 3 in Kynkaanniemi et al. 2019; null: off")] = 3,
                 density_coverage_k: Annotated[Count | None, Field(
                     description="k of density / coverage, 5 in Naeem et al. 2020; null: off")] = 5,
                 copies: Flag = True,
                 nearest_samples: Annotated[NonNegativeInt, Field(
                     description="rows of the nearest-training-neighbour grid; 0: off")] = 8,
                 nearest_k: Annotated[Count, Field(description="training neighbours per row")] = 4):
        self.num_samples, self.real_split, self.seed = num_samples, real_split, seed
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.precision_recall_k, self.density_coverage_k = precision_recall_k, density_coverage_k
        self.copies, self.nearest_samples, self.nearest_k = copies, nearest_samples, nearest_k

    def check(self, model, data, features: str) -> None:
        """Before training: the model must sample, and every metric must have enough images on both sides."""
        if not isinstance(model, Samples):
            raise GdmError(f"metrics=fid scores a model's samples, and {type(model).__name__} draws none (it "
                           "translates): use metrics=translation.")
        n_real = len(data.split(self.real_split))
        ks = [k for k in (self.precision_recall_k, self.density_coverage_k) if k]
        need = max([2, *(k + 1 for k in ks)])
        if n_real < need or self.num_samples < need:
            raise GdmError(f"the sample metrics need at least {need} images on both sides (FID: 2, k-NN metrics: "
                           f"k + 1), and have num_samples={self.num_samples} generated and {n_real} real "
                           f"(real_split={self.real_split}): raise num_samples or use a larger split.")

    def names(self, model, data, features: str) -> list[str]:
        """The values `__call__` logs, known before it runs (the run's monitor is checked against them)."""
        metrics = ["fid", *(["kid", "kid_std"] if self.kid_subset_size else []),
                   *(["precision", "recall"] if self.precision_recall_k else []),
                   *(["density", "coverage"] if self.density_coverage_k else []),
                   *(["copies"] if self.copies else [])]
        baselines = ([f"val/fid_{features}_reconstructions", f"val/fid_{features}_autoencoder"]
                     if getattr(model, "latent", None) is not None else [])
        return [*(f"val/{m}_{features}" if m != "kid_std" else f"val/kid_{features}_std" for m in metrics), COST,
                *baselines]

    @torch.no_grad()
    def generated_features(self, ev: Evaluation, generate=None) -> tuple[torch.Tensor, float]:
        """The features of samples 0..num_samples-1 (every process's, in index order) and the seconds per 1,000
        samples their `generate` calls took (the slowest process's share). `generate`: another sampler than the
        model's (a latent model's autoencoder)."""
        clock = SamplingClock(ev.device)
        if generate is None:
            ev.model.begin_measurement()  # the protocol's measured NFE: this evaluation's samples alone
        generate = generate or ev.model.generate
        mine = [ev.featurize(clock(generate, indices, seed=self.seed))
                for indices in ev.shard(self.num_samples).split(ev.batch_size)]
        rows = torch.cat(mine) if mine else torch.empty(0, ev.features.num_features, device=ev.device)
        return ev.gather(rows, self.num_samples), 1000 * ev.slowest(clock.seconds) / self.num_samples

    def __call__(self, ev: Evaluation) -> MetricResult:
        name = ev.feature_protocol["name"]
        real = ev.real_features(self.real_split)
        fake, seconds_per_1000 = self.generated_features(ev)
        sampling = ev.model.sampling_protocol()  # after generating: an adaptive solver's NFE is measured
        cost = {"seconds_per_1000": seconds_per_1000, "device": device_name(ev.device),
                "processes": ev.world_size, "batch_size": ev.batch_size}
        base = {"features": ev.feature_protocol, "quantization": QUANTIZATION, "num_generated": self.num_samples,
                "num_real": real.shape[0], "real_split": self.real_split, "sample_seed": self.seed,
                "conditional_labels": sampled_labels(ev.model), "sampling": sampling, "sampling_cost": cost}
        result = MetricResult()
        # A time is only comparable on the same device, processes and batch size: those name its protocol.
        result.values[COST] = seconds_per_1000
        result.protocols[COST] = with_id({"metric": "sample_seconds_per_1000", "num_generated": self.num_samples,
                                          "sampling": sampling, **{k: v for k, v in cost.items()
                                                                   if k != "seconds_per_1000"}})

        def add(metric: str, value: float, **extra) -> None:
            result.values[f"val/{metric}_{name}"] = value
            result.protocols[f"val/{metric}_{name}"] = with_id({"metric": metric, **base, **extra})

        add("fid", frechet_distance(real, fake))
        latent = getattr(ev.model, "latent", None)
        if latent is not None:  # the autoencoder's two baselines
            recon = self.reconstruction_features(ev, latent)
            own, _ = self.generated_features(ev, latent.autoencoder.generate)
            for suffix, features, drawn in (("reconstructions", recon, "the autoencoder's reconstructions of the "
                                             "real split"), ("autoencoder", own, "the autoencoder's own samples")):
                result.values[f"val/fid_{name}_{suffix}"] = frechet_distance(real, features)
                common = {k: v for k, v in base.items() if k not in ("sampling", "sampling_cost")}  # not the model's
                result.protocols[f"val/fid_{name}_{suffix}"] = with_id({
                    "metric": "fid", **common, "num_generated": features.shape[0], "conditional_labels": None,
                    "baseline": {"images": drawn, "latent": latent.protocol()}})
        if self.kid_subset_size:
            mean, std = kernel_distance(real, fake, self.kid_subset_size, self.kid_subsets, self.seed)
            size = min(self.kid_subset_size, real.shape[0], fake.shape[0])
            add("kid", mean, subset_size=size, subsets=self.kid_subsets)
            result.values[f"val/kid_{name}_std"] = std  # the spread over the random subsets
            result.protocols[f"val/kid_{name}_std"] = result.protocols[f"val/kid_{name}"]
        if self.precision_recall_k:
            for metric, value in precision_recall(real, fake, self.precision_recall_k).items():
                add(metric, value, k=self.precision_recall_k)
        if self.density_coverage_k:
            for metric, value in density_coverage(real, fake, self.density_coverage_k).items():
                add(metric, value, k=self.density_coverage_k)
        if self.copies or self.nearest_samples:
            train = real if self.real_split == "train" else ev.real_features("train")
            nearest = {**base, "num_real": train.shape[0], "real_split": "train"}
            if self.copies:
                result.values[f"val/copies_{name}"] = copy_fraction(fake, train)
                result.protocols[f"val/copies_{name}"] = with_id({"metric": "copies", **nearest})
            if self.nearest_samples:
                result.grids[f"nearest_{name}"] = self.nearest_grid(ev, fake, train)
        return result

    @torch.no_grad()
    def reconstruction_features(self, ev: Evaluation, latent) -> torch.Tensor:
        """Features of the latent space's reconstructions of every image of `real_split` (all processes, in
        index order)."""
        dataset = ev.split(self.real_split)
        mine = [ev.featurize(latent.reconstruct(torch.stack([dataset[int(i)]["image"] for i in indices]).to(ev.device)))
                for indices in ev.shard(len(dataset)).split(ev.batch_size)]
        rows = torch.cat(mine) if mine else torch.empty(0, ev.features.num_features, device=ev.device)
        return ev.gather(rows, len(dataset))

    def nearest_grid(self, ev: Evaluation, fake: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Rows: sample i | its `nearest_k` nearest training images (nearest first)."""
        n = min(self.nearest_samples, self.num_samples)
        k = min(self.nearest_k, train.shape[0])
        _, indices = nearest_neighbours(fake[:n], train, k=k)
        samples = ev.model.generate(range(n), seed=self.seed).float().cpu()
        train_set = ev.split("train")
        neighbours = torch.stack([torch.stack([train_set[int(j)]["image"] for j in row]) for row in indices.cpu()])
        rows = torch.cat([samples[:, None], neighbours.to(samples.dtype)], 1)  # (n, 1 + k, C, H, W)
        return rows.flatten(0, 1), 1 + k
