"""k-NN fidelity and diversity metrics of generated samples, computed on feature vectors.

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
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


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
