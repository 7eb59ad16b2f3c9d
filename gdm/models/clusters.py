"""Self-conditioning without labels: k-means clusters of the training images as a GAN's classes.

A cluster-conditioned GAN trains as a class-conditional one, with each real image's label the index of its
nearest cluster centre; in training each fake takes its real counterpart's label (as in the cGAN), and
samples draw theirs from the cluster frequencies (so fakes follow them in both), so G and D model one
cluster at a time instead of the whole mixture. This is the idea of Logo-GAN (Sage et al. 2018, "Logo
Synthesis and Manipulation with Clustered Generative Adversarial Networks": k-means on pretrained features)
and of the Self-Conditioned GAN (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs":
k-means on the discriminator's features, re-clustered during training). Here the clusters are fixed before
training, in pixel space at low resolution: no extra network, nothing learnt from labels, and a checkpoint
holds the centres, so sampling needs no data. k-means is seeded with 0 whatever the run's seed, so runs
with different seeds share their clusters. Its effect on the default run is measured in experiments/small_data_gans.md.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import nn
from torch.utils.data import Dataset

from gdm.errors import GdmError
from gdm.option_types import checked

# Images are compared at this side (area-averaged): the layout of a digit or a scene, not its texture.
CLUSTER_SIDE = 8
# k-means fits on at most this many training images (a seeded subset of larger sets).
MAX_FIT_IMAGES = 20_000


def area_average(images: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) images -> (..., C, s, s) float, s = min(CLUSTER_SIDE, H, W), area-averaged."""
    return F.adaptive_avg_pool2d(images.float(), min(CLUSTER_SIDE, images.shape[-2], images.shape[-1]))


def downsample(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] -> (N, C * s * s) rows, s = min(CLUSTER_SIDE, H, W), area-averaged."""
    return area_average(images).flatten(1)


def cluster_inputs(dataset: Dataset) -> torch.Tensor:
    """What k-means sees of a training split: its images (N, C, H, W) in [-1, 1], area-averaged to at most
    CLUSTER_SIDE px (a seeded subset of MAX_FIT_IMAGES when larger), read without random augmentation."""
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):  # in memory already (the embedded digits)
        return images
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:MAX_FIT_IMAGES] if n > MAX_FIT_IMAGES \
        else range(n)
    small = [area_average(dataset[int(i)]["image"]) for i in order]
    return torch.stack(small)


class PixelClusters(nn.Module):
    """k cluster centres of low-resolution training images; `assign` labels images by the nearest one.

    The centres are a buffer (k, C * s * s), so they live in the state dict and checkpoints.
    """

    @checked
    def __init__(self, clusters: Annotated[int, Strict(), Field(ge=2, description=(
                     "k-means clusters of the training images that G and D are conditioned on; null for an "
                     "unconditional GAN"))],
                 image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = image_shape
        side = min(CLUSTER_SIDE, h, w)
        self.k = clusters
        self.register_buffer("centres", torch.zeros(clusters, c * side * side))

    @torch.no_grad()
    def fit(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """k-means (scikit-learn's, k-means++ with 10 initialisations) on (N, C, H, W) training images in
        [-1, 1]; sets the centres and returns the images per cluster (k,), the frequencies fakes are drawn
        with. Raises GdmError when there are fewer distinct images (as k-means sees them) than clusters, or a
        cluster ends up empty: its label would condition samples on nothing the data holds."""
        from sklearn.cluster import KMeans

        rows = downsample(images).double()
        distinct = len(torch.unique(rows, dim=0))
        if distinct < self.k:
            seen = f"{len(images)} training images, {distinct} of them distinct" if distinct < len(images) else \
                f"{len(images)} training images"
            side = min(CLUSTER_SIDE, *images.shape[-2:])
            raise GdmError(f"clusters={self.k} needs at least {self.k} distinct training images (as k-means compares "
                           f"them, at {side} px), and the training split has {seen}: set clusters={max(distinct, 2)} "
                           "or fewer, or add images.")
        kmeans = KMeans(n_clusters=self.k, n_init=10, random_state=seed).fit(rows.numpy())
        self.centres.copy_(torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32))
        counts = torch.bincount(self.assign(images).cpu(), minlength=self.k)
        empty = int((counts == 0).sum())
        if empty:
            raise GdmError(f"clusters={self.k}: {empty} of the k-means clusters hold no training image, so their "
                           f"samples would follow no data: set clusters={self.k - empty} or fewer.")
        return counts

    @torch.no_grad()
    def assign(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N,) long: the index of each image's nearest centre (Euclidean)."""
        # In float32 whatever the run's precision (trainer.precision=bf16-true casts the centres to bf16).
        return torch.cdist(downsample(images), self.centres.to(images.device, torch.float32)).argmin(1)
