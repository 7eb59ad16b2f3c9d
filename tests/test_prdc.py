"""Improved precision/recall and density/coverage (gdm.metrics.feature_metrics) on feature sets with known
answers."""

from __future__ import annotations

import math

import pytest
import torch

from gdm.metrics.feature_metrics import density_coverage, kth_neighbour_distances, precision_recall

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(num_points: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(num_points, dim, generator=torch.Generator().manual_seed(seed)) + shift


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


# Hand computation, k = 1, 1-D; every distance is exact in binary floating point.
#   real radii (distance to nearest other real): 0->1, 1->1, 3->2, 6->3
#   real balls: [-1, 1], [0, 2], [1, 5], [3, 9]
#   real balls holding each fake: 0.5: B(0), B(1) = 2;  0.75: B(0), B(1) = 2 (|0.75-3| > 2);
#     2: B(1) on its boundary |2-1| = 1, B(3) = 2;  9: B(6) on its boundary |9-6| = 3 -> 1;  10, 30: none
#   precision = 4/6 (0.5, 0.75, 2, 9);  density = (2 + 2 + 2 + 1) / (k * M) = 7/6
#   coverage: nearest fake of 0: 0.5 <= 1, of 1: 0.75 at 0.25 <= 1, of 3: 2 at 1 <= 2, of 6: 9 at 3 <= 3
#     (boundary) -> 4/4
#   fake radii: 0.5->0.25, 0.75->0.25, 2->1.25, 9->1, 10->1, 30->20
#   fake balls: [0.25, 0.75], [0.5, 1], [0.75, 3.25], [8, 10], [9, 11], [10, 50]
#   recall: 0 in none; 1 in [0.5, 1] (boundary) and [0.75, 3.25]; 3 in [0.75, 3.25]; 6 in none -> 2/4
# With a strict < (the clovaai code) the boundary cases drop out: precision 3/6, density 5/6, coverage 3/4.
HAND_REAL = column(0, 1, 3, 6)
HAND_FAKE = column(0.5, 0.75, 2, 9, 10, 30)


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_hand_computed_1d_example(chunk):
    assert kth_neighbour_distances(HAND_REAL, k=1, chunk=chunk).tolist() == [1, 1, 2, 3]
    assert precision_recall(HAND_REAL, HAND_FAKE, k=1, chunk=chunk) == {"precision": 4 / 6, "recall": 2 / 4}
    assert density_coverage(HAND_REAL, HAND_FAKE, k=1, chunk=chunk) == {"density": 7 / 6, "coverage": 1.0}


def test_kth_neighbour_excludes_the_point_but_counts_its_duplicates():
    # 0, 0, 1, 5: the k = 1 neighbour of each 0 is the other 0; k = 2: 1 for the zeros, 5 for 1 (0, 0), 4 for 5
    points = column(0, 0, 1, 5)
    assert kth_neighbour_distances(points, k=1).tolist() == [0, 0, 1, 4]
    assert kth_neighbour_distances(points, k=2).tolist() == [1, 1, 1, 5]


def test_identical_sets():
    # Each point is the fake at distance 0 of its own ball, so precision = recall = coverage = 1. Without ties,
    # each real ball holds exactly k + 1 points (the centre and its k nearest, the k-th on the closed
    # boundary), so density = N (k + 1) / (k N) = (k + 1) / k, not 1: the expected 1 is for independent draws.
    features = gaussian(300, 8, seed=0)
    assert precision_recall(features, features) == {"precision": 1.0, "recall": 1.0}
    for k in (1, 5):
        result = density_coverage(features, features, k=k)
        assert result["coverage"] == 1.0
        assert result["density"] == pytest.approx((k + 1) / k, abs=1e-12)


def test_independent_draws_of_one_distribution():
    # Naeem et al. 2020, lemmas 1 and 2: E[density] = 1 and E[coverage] = 1 - prod_{i<k} (N-1-i) / (N+M-1-i)
    # (the chance that a real point's k nearest among the others and the fakes are all real) for any continuous
    # distribution; ~0.969 for N = M = 1000, k = 5.
    num_points, k = 1000, 5
    real, fake = gaussian(num_points, 8, seed=1), gaussian(num_points, 8, seed=2)
    expected_coverage = 1 - math.prod((num_points - 1 - i) / (2 * num_points - 1 - i) for i in range(k))
    result = density_coverage(real, fake, k=k)
    assert result["density"] == pytest.approx(1.0, abs=0.1)
    assert result["coverage"] == pytest.approx(expected_coverage, abs=0.015)
    assert precision_recall(real, fake)["precision"] > 0.8


def test_disjoint_sets_score_zero():
    real, fake = gaussian(100, 16, seed=3), gaussian(80, 16, seed=4, shift=100.0)
    assert precision_recall(real, fake) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(real, fake) == {"density": 0.0, "coverage": 0.0}


def test_dropping_half_the_modes_costs_recall_and_coverage_not_precision():
    # 8 tight clusters (std 0.1) on a circle of radius 10, 7.7 apart; the fakes fill only the first 4. No real of
    # the other 4 can be in a fake ball or hold a fake, so recall and coverage are at most 1/2; within the
    # covered modes real and fake are one distribution, so about 0.97 of the reals there are covered.
    generator = torch.Generator().manual_seed(5)
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = 10 * torch.stack([angles.cos(), angles.sin()], dim=1)
    real = (centres[:, None] + 0.1 * torch.randn(8, 50, 2, generator=generator)).reshape(-1, 2)
    fake = (centres[:4, None] + 0.1 * torch.randn(4, 50, 2, generator=generator)).reshape(-1, 2)
    pr, dc = precision_recall(real, fake), density_coverage(real, fake)
    assert pr["precision"] > 0.9
    assert 0.4 < pr["recall"] <= 0.5
    assert 0.4 < dc["coverage"] <= 0.5
    assert dc["density"] == pytest.approx(1.0, abs=0.2)


def test_chunk_size_and_input_dtype_do_not_change_the_result():
    real, fake = gaussian(41, 5, seed=6), gaussian(29, 5, seed=7, shift=0.3)
    expected = {**precision_recall(real, fake, chunk=4096), **density_coverage(real, fake, chunk=4096)}
    for chunk in (1, 3, 40):
        assert {**precision_recall(real, fake, chunk=chunk), **density_coverage(real, fake, chunk=chunk)} == expected
    as_float64 = {**precision_recall(real.double(), fake.double()), **density_coverage(real.double(), fake.double())}
    assert as_float64 == expected


def test_density_only_needs_one_fake():
    assert density_coverage(HAND_REAL, column(0.5), k=1) == {"density": 2.0, "coverage": 0.5}


@pytest.mark.parametrize(("call", "message"), [
    (lambda: precision_recall(gaussian(3, 4, 0), gaussian(10, 4, 1)),
     "real has 3 points but needs at least 4 (k = 3 neighbours for each point besides itself)."),
    (lambda: precision_recall(gaussian(10, 4, 0), gaussian(2, 4, 1)), "fake has 2 points but needs at least 4"),
    (lambda: density_coverage(gaussian(5, 4, 0), gaussian(10, 4, 1)), "real has 5 points but needs at least 6"),
    (lambda: density_coverage(gaussian(10, 4, 0), gaussian(0, 4, 1)), "fake has 0 points but needs at least 1"),
    (lambda: precision_recall(gaussian(10, 8, 0), gaussian(10, 4, 1)),
     "real has 8 features per point but fake has 4; both must come from the same feature network."),
    (lambda: density_coverage(torch.zeros(10), gaussian(10, 4, 1)), "real must be a [num_points, feature_dim]"),
    (lambda: precision_recall(gaussian(10, 4, 0), torch.full((10, 4), math.nan)), "fake contains NaN"),
    (lambda: precision_recall(gaussian(10, 4, 0), gaussian(10, 4, 1), k=0), "k must be a positive integer"),
    (lambda: density_coverage(gaussian(10, 4, 0), gaussian(10, 4, 1), chunk=0), "chunk must be a positive"),
])
def test_bad_input_is_refused_in_one_sentence(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
