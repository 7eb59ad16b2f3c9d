"""The sample metrics as plain functions of a real and a generated feature set: how far apart the two
distributions are, fidelity and diversity apart, and copies of the training set.

Fréchet distance (FID, Heusel et al. 2017) and kernel distance (KID, Bińkowski et al. 2018), computed by
torchmetrics' own formulas on whole feature matrices:
- `frechet_distance(real, fake)`: the means and covariances exactly as torchmetrics'
  FrechetInceptionDistance accumulates them (float64 sums, unbiased covariance), then its
  `_compute_fid` (||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2), via eigenvalues).
- `kernel_distance(real, fake, subset_size, subsets, seed)`: torchmetrics' KernelInceptionDistance
  protocol (cubic polynomial kernel, unbiased MMD^2 averaged over `subsets` random subsets of
  `subset_size` per side), with the subsets drawn from a seeded generator so the value is reproducible
  and the training run's RNG stream is untouched. Returns (mean, std over subsets).

Features: (N, D) and (M, D) tensors, any float dtype; values in feature units squared.

k-NN metrics:
- `precision_recall`: improved precision and recall, Kynkäänniemi et al. 2019, "Improved Precision and
  Recall Metric for Assessing Generative Models" (arXiv:1904.06991); k = 3 as in the paper.
  Precision: the fraction of fake points inside at least one real k-NN ball (fidelity).
  Recall: the fraction of real points inside at least one fake k-NN ball (diversity).
- `density_coverage`: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models" (arXiv:2002.09797), reference code github.com/clovaai/generative-evaluation-prdc; k = 5, their
  default. Only the real k-NN balls are used, so an outlier among the fakes cannot inflate either value.
  Density = (1 / kM) sum_j sum_i 1[fake_j in B(real_i, r_i)]: how many real balls a fake point lies in,
  over k; 1 in expectation when real and fake come from the same distribution.
  Coverage = (1 / N) sum_i 1[some fake_j in B(real_i, r_i)].

A k-NN ball B(x_i, r_i) of a set is centred at a point with r_i = the distance to its k-th nearest other
point of the same set, and is closed: a point exactly on the boundary is inside (<=), as in the
Kynkäänniemi et al. reference code. (The clovaai code uses a strict <; the two differ only on exact
ties, e.g. discrete or duplicated features.)

Inputs are `real: Tensor[N, D]` and `fake: Tensor[M, D]`, any float dtype, on any one device; distances
are Euclidean, in float64, computed pair by pair (no |a|^2 + |b|^2 - 2ab cancellation, so a point's
distance to itself is exactly 0 and ties are exact), `chunk` rows at a time: memory is chunk x max(N, M)
float64 distances, never N x M. Precision, recall and coverage lie in [0, 1]; density lies in [0, N / k]
and can exceed 1 (fakes crowded where the real balls overlap).

Whether a model copies its training set:
- `nearest_neighbours(queries [M, D], train [N, D], k)`: the k nearest training points of each query.
- `train_nn_distances(train [N, D])`: each training point's distance to its nearest other training point.
- `copy_fraction(samples [M, D], train [N, D])`: the fraction of samples that sit closer to their nearest
  training image than any other training image does, i.e. likely copies; in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd


def gaussian_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) in float64, as torchmetrics' FID computes them."""
    f = features.double()
    n = f.shape[0]
    mean = (f.sum(0) / n).unsqueeze(0)
    cov = (f.t().mm(f) - n * mean.t().mm(mean)) / (n - 1)
    return mean.squeeze(0), cov


def check_sizes(real: torch.Tensor, fake: torch.Tensor, need: int, what: str) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"{what}: real features have {real.shape[1]} dimensions, generated {fake.shape[1]}.")
    for side, feats in (("real", real), ("generated", fake)):
        if feats.shape[0] < need:
            raise ValueError(f"{what} needs at least {need} {side} images and got {feats.shape[0]}.")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between real (N, D) and generated (M, D) features; N, M >= 2."""
    check_sizes(real, fake, 2, "FID")
    return float(_compute_fid(*gaussian_moments(real), *gaussian_moments(fake)).float())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets); `subset_size` is capped at the smaller set (torchmetrics would refuse)."""
    check_sizes(real, fake, 2, "KID")
    size = min(subset_size, real.shape[0], fake.shape[0])
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        f_real = real[torch.randperm(real.shape[0], generator=generator)[:size].to(real.device)]
        f_fake = fake[torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)]
        scores.append(poly_mmd(f_real.double(), f_fake.double()))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def check_features(name: str, features: Tensor, min_points: int, why: str) -> None:
    """Raise a one-sentence ValueError unless `features` is a finite [num_points, dim] tensor with at least
    `min_points` rows; `why` says what the rows are needed for."""
    if features.ndim != 2:
        raise ValueError(f"{name} must be a [num_points, feature_dim] tensor, but has shape {tuple(features.shape)}.")
    num_points = features.shape[0]
    if num_points < min_points:
        points = "point" if num_points == 1 else "points"
        raise ValueError(f"{name} has {num_points} {points} but needs at least {min_points} ({why}).")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values, so its distances are meaningless.")


def check_same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} features per point but {name_b} has {b.shape[1]}; "
                         f"both must come from the same feature network.")


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value}.")


def as_float64(features: Tensor, device: torch.device) -> Tensor:
    return features.detach().to(device=device, dtype=torch.float64)


def distance_chunks(queries: Tensor, points: Tensor, chunk: int) -> Iterator[tuple[int, Tensor]]:
    """Yield (start, distances[chunk rows, len(points)]) for consecutive row blocks of `queries`.

    The direct (not matrix-product) cdist: each distance is sqrt(sum((a - b)^2)), the same bits whichever
    block or argument order it is computed in, so a boundary point compares equal to a radius computed in
    another block. The price: about 13x slower on CPU than the |a|^2 + |b|^2 - 2ab form, whose float64 self
    distances at D = 2048 come out ~1e-6 instead of 0."""
    for start in range(0, queries.shape[0], chunk):
        yield start, torch.cdist(queries[start:start + chunk], points, compute_mode="donot_use_mm_for_euclid_dist")


def kth_neighbour_distances(features: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """Tensor[N] float64: each point's distance to its k-th nearest other point of `features` [N, D].

    As the reference code: the (k+1)-th smallest distance of the row, which includes the point's own 0
    (a duplicate of the point also counts as a neighbour at distance 0)."""
    check_positive("k", k)
    check_positive("chunk", chunk)
    check_features("features", features, k + 1, f"k = {k} neighbours for each point besides itself")
    points = as_float64(features, features.device)
    radii = torch.empty(points.shape[0], dtype=torch.float64, device=points.device)
    for start, distances in distance_chunks(points, points, chunk):
        radii[start:start + distances.shape[0]] = distances.kthvalue(k + 1, dim=1).values
    return radii


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 4096) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake` [M, D] against `real` [N, D].

    Returns {"precision": fraction of fakes in some real k-NN ball, "recall": fraction of reals in some
    fake k-NN ball}, both in [0, 1]. Both sets need at least k + 1 points."""
    check_positive("k", k)
    check_positive("chunk", chunk)
    check_features("real", real, k + 1, f"k = {k} neighbours for each point besides itself")
    check_features("fake", fake, k + 1, f"k = {k} neighbours for each point besides itself")
    check_same_dim("real", real, "fake", fake)
    real, fake = as_float64(real, real.device), as_float64(fake, real.device)
    real_radii = kth_neighbour_distances(real, k, chunk)
    fake_radii = kth_neighbour_distances(fake, k, chunk)

    # One pass over real-fake distances serves both: precision ORs over the real rows of each fake column
    fake_in_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    real_in_fake_ball = torch.empty(real.shape[0], dtype=torch.bool, device=real.device)
    for start, distances in distance_chunks(real, fake, chunk):
        rows = slice(start, start + distances.shape[0])
        fake_in_real_ball |= (distances <= real_radii[rows, None]).any(dim=0)
        real_in_fake_ball[rows] = (distances <= fake_radii[None, :]).any(dim=1)
    return {"precision": fake_in_real_ball.double().mean().item(),
            "recall": real_in_fake_ball.double().mean().item()}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5, chunk: int = 4096) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020) of `fake` [M, D] against `real` [N, D].

    Returns {"density": real k-NN balls per fake point, over k, in [0, N / k] (about 1 for fakes from the
    real distribution), "coverage": fraction of real balls holding at least one fake, in [0, 1]}. Only real
    balls are used, so `real` needs at least k + 1 points and `fake` at least one."""
    check_positive("k", k)
    check_positive("chunk", chunk)
    check_features("real", real, k + 1, f"k = {k} neighbours for each point besides itself")
    check_features("fake", fake, 1, "a sample to measure")
    check_same_dim("real", real, "fake", fake)
    real, fake = as_float64(real, real.device), as_float64(fake, real.device)
    real_radii = kth_neighbour_distances(real, k, chunk)

    balls_per_fake = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)
    real_ball_covered = torch.empty(real.shape[0], dtype=torch.bool, device=real.device)
    for start, distances in distance_chunks(real, fake, chunk):
        rows = slice(start, start + distances.shape[0])
        balls_per_fake += (distances <= real_radii[rows, None]).sum(dim=0)
        real_ball_covered[rows] = distances.min(dim=1).values <= real_radii[rows]
    return {"density": (balls_per_fake.sum() / (k * fake.shape[0])).item(),
            "coverage": real_ball_covered.double().mean().item()}


def nearest_neighbours(queries: Tensor, train: Tensor, k: int = 1, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(distances Tensor[M, k] float64, indices Tensor[M, k] long) of each query's k nearest training
    points, nearest first; equally distant training points come in no particular order."""
    check_positive("k", k)
    check_positive("chunk", chunk)
    check_features("queries", queries, 1, "a point to look up")
    check_features("train", train, k, f"{k} nearest neighbours per query")
    check_same_dim("queries", queries, "train", train)
    train = as_float64(train, train.device)
    queries = as_float64(queries, train.device)
    distances = torch.empty(queries.shape[0], k, dtype=torch.float64, device=train.device)
    indices = torch.empty(queries.shape[0], k, dtype=torch.long, device=train.device)
    for start, block in distance_chunks(queries, train, chunk):
        rows = slice(start, start + block.shape[0])
        distances[rows], indices[rows] = block.topk(k, dim=1, largest=False, sorted=True)
    return distances, indices


def train_nn_distances(train: Tensor, chunk: int = 4096) -> Tensor:
    """Tensor[N] float64: each training point's distance to its nearest other training point.

    The point itself is excluded by index, not by distance, so a point duplicated in the training set
    gets 0."""
    check_positive("chunk", chunk)
    check_features("train", train, 2, "a neighbour for each point besides itself")
    train = as_float64(train, train.device)
    nn_distances = torch.empty(train.shape[0], dtype=torch.float64, device=train.device)
    for start, block in distance_chunks(train, train, chunk):
        rows = torch.arange(block.shape[0], device=train.device)
        block[rows, rows + start] = torch.inf
        nn_distances[start:start + block.shape[0]] = block.min(dim=1).values
    return nn_distances


def copy_fraction(samples: Tensor, train: Tensor, chunk: int = 4096) -> float:
    """Fraction of `samples` [M, D] that are likely copies of a training image, in [0, 1].

    A sample counts as a copy of its nearest training image t when it is strictly closer to t than t's own
    nearest other training image is: it sits inside the gap around t that the rest of the training set
    leaves empty. Fresh draws from the data distribution land this close by chance too (about 2/3 of them in
    1-2 dimensions; 0.29, 0.19, 0.13 for 2000 Gaussian training points in 16, 64, 256 dimensions), so
    compare a model's value with a held-out real set's, not with 0. A training image duplicated in `train`
    has a gap of 0, so no sample counts as its copy: deduplicate the training features first if that
    matters."""
    check_positive("chunk", chunk)
    check_features("samples", samples, 1, "a sample to measure")
    check_features("train", train, 2, "a neighbour for each point besides itself")
    check_same_dim("samples", samples, "train", train)
    gaps = train_nn_distances(train, chunk)
    distances, indices = nearest_neighbours(samples, train, k=1, chunk=chunk)
    is_copy = distances[:, 0] < gaps[indices[:, 0]]
    return is_copy.double().mean().item()
