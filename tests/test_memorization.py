"""Nearest-neighbour memorization checks (gdm.metrics.feature_metrics) with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from gdm.metrics.feature_metrics import copy_fraction, nearest_neighbours, train_nn_distances

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(num_points: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(num_points, dim, generator=torch.Generator().manual_seed(seed)) + shift


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


# 1-D training set 0, 1, 3, 6: nearest-other distances ("gaps") 1, 1, 2, 3.
TRAIN = column(0, 1, 3, 6)


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_nearest_neighbours_by_hand(chunk):
    # 2.75: 3 at 0.25, 1 at 1.75;  -1: 0 at 1, 1 at 2;  10: 6 at 4, 3 at 7
    distances, indices = nearest_neighbours(column(2.75, -1, 10), TRAIN, k=2, chunk=chunk)
    assert distances.dtype == torch.float64 and indices.dtype == torch.long
    assert distances.tolist() == [[0.25, 1.75], [1, 2], [4, 7]]
    assert indices.tolist() == [[2, 1], [0, 1], [3, 2]]


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_train_nn_distances_exclude_the_point_by_index(chunk):
    assert train_nn_distances(TRAIN, chunk=chunk).tolist() == [1, 1, 2, 3]
    # an exact duplicate is another point at distance 0, not the point itself
    assert train_nn_distances(column(0, 5, 0, 7, 7), chunk=chunk).tolist() == [0, 2, 0, 0, 0]


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_copy_fraction_by_hand(chunk):
    # nearest training point, distance, its gap: 0.25 -> 0, 0.25 < 1 copy;  -1 -> 0, 1 = 1 not (strict);
    # 4.5 -> 3, 1.5 < 2 copy;  9 -> 6, 3 = 3 not;  8 -> 6, 2 < 3 copy;  so 3/5
    assert copy_fraction(column(0.25, -1, 4.5, 9, 8), TRAIN, chunk=chunk) == 3 / 5


def test_copies_far_samples_and_a_mix():
    train = gaussian(200, 32, seed=0)
    copies = train[:100] + 1e-6 * gaussian(100, 32, seed=1)  # typical gaps in 32-D are ~5
    far = gaussian(100, 32, seed=2, shift=50.0)
    assert copy_fraction(train, train) == 1.0  # every point is at 0 from itself, and no gap is 0
    assert copy_fraction(copies, train) == 1.0
    assert copy_fraction(far, train) == 0.0
    assert copy_fraction(torch.cat([copies, far]), train) == 0.5


def test_a_duplicated_training_image_has_no_copies():
    # 7 is in the training set twice, so its gap is 0 and not even an exact 7 is strictly inside it
    train = column(0, 7, 3, 7)
    assert copy_fraction(column(7, 7.001), train) == 0.0
    assert copy_fraction(column(3, 0.5), train) == 1.0


def test_chunk_size_and_input_dtype_do_not_change_the_result():
    train, samples = gaussian(53, 6, seed=3), gaussian(31, 6, seed=4)
    distances, indices = nearest_neighbours(samples, train, k=4)
    assert torch.equal(distances, distances.sort(dim=1).values)
    for chunk in (1, 7):
        chunked_distances, chunked_indices = nearest_neighbours(samples.double(), train.double(), k=4, chunk=chunk)
        assert torch.equal(chunked_distances, distances) and torch.equal(chunked_indices, indices)
        assert torch.equal(train_nn_distances(train, chunk=chunk), train_nn_distances(train.double()))
        assert copy_fraction(samples, train, chunk=chunk) == copy_fraction(samples.double(), train.double())


@pytest.mark.parametrize(("call", "message"), [
    (lambda: nearest_neighbours(gaussian(5, 4, 0), gaussian(2, 4, 1), k=3),
     "train has 2 points but needs at least 3 (3 nearest neighbours per query)."),
    (lambda: train_nn_distances(gaussian(1, 4, 0)),
     "train has 1 point but needs at least 2 (a neighbour for each point besides itself)."),
    (lambda: copy_fraction(gaussian(0, 4, 0), gaussian(10, 4, 1)), "samples has 0 points but needs at least 1"),
    (lambda: copy_fraction(gaussian(5, 3, 0), gaussian(10, 4, 1)),
     "samples has 3 features per point but train has 4; both must come from the same feature network."),
    (lambda: copy_fraction(gaussian(5, 4, 0), torch.full((10, 4), math.inf)), "train contains NaN or infinite"),
    (lambda: nearest_neighbours(gaussian(5, 4, 0), gaussian(10, 4, 1), k=0), "k must be a positive integer"),
])
def test_bad_input_is_refused_in_one_sentence(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
