"""The shipped digits classifier: accuracy on held-out digits, and its use as a frozen FID feature net."""

from __future__ import annotations

import pytest
import torch

from gdm.data.digits import DigitsDataModule
from gdm.images import to_uint8
from gdm.metrics.digits_classifier import accuracy, digit_split
from gdm.metrics.features import WEIGHTS, DigitClassifier, DigitFeatures, load_digit_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_split():
    return digit_split("test")


def test_weights_ship_with_the_package():
    assert WEIGHTS.is_file()
    assert WEIGHTS.name == "digits_classifier.pt"


def test_digit_split_format(test_split):
    images, labels = test_split
    assert images.dtype == torch.uint8
    assert images.shape == (180, 1, 32, 32)
    assert labels.shape == (180,)
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_accuracy_on_held_out_test_split(test_split):
    net = load_digit_classifier()
    assert accuracy(net, *test_split) >= 0.95


@pytest.mark.slow
def test_accuracy_at_16_pixels_and_in_rgb(test_split):
    # The classifier resizes any input to 32x32 and reduces colour to luminance.
    net = load_digit_classifier()
    ds = DigitsDataModule(image_size=16).split("test")
    small = to_uint8(ds.images)
    assert accuracy(net, small, ds.labels) >= 0.9
    images, labels = test_split
    assert accuracy(net, images.expand(-1, 3, -1, -1), labels) >= 0.95


def test_accuracy_helper_counts_correctly(test_split):
    net = load_digit_classifier()
    images, labels = test_split
    with torch.no_grad():
        predicted = net(images[:20]).argmax(1)
    wrong = (predicted + 1) % 10
    assert accuracy(net, images[:20], predicted) == 1.0
    assert accuracy(net, images[:20], wrong) == 0.0


def test_loaded_classifier_is_frozen_and_in_eval():
    net = load_digit_classifier()
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_features_are_128d_and_deterministic(test_split):
    images, _ = test_split
    features = DigitFeatures()
    assert features.num_features == 128
    with torch.no_grad():
        a = features(images[:50])
        b = features(images[:50])
        c = DigitFeatures()(images[:50])
    assert a.shape == (50, 128)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    assert a.std().item() > 0.1  # not a constant


def test_features_do_not_depend_on_batch(test_split):
    images, _ = test_split
    features = DigitFeatures()
    with torch.no_grad():
        together = features(images[:12])
        alone = torch.cat([features(images[i:i + 1]) for i in range(12)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_digit_features_stay_in_eval_mode(test_split):
    features = DigitFeatures()
    returned = features.train()
    assert returned is features
    assert not features.training
    assert not any(m.training for m in features.modules())
    features.train(True)
    assert not any(m.training for m in features.modules())
    # Batch norm in eval mode uses running statistics: one image's features do not depend on the batch,
    # and dropout is off: repeated calls agree.
    images, _ = test_split
    with torch.no_grad():
        torch.testing.assert_close(features(images[:1]), features(images[:8])[:1], rtol=1e-5, atol=1e-5)


def test_classifier_prepare():
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    prepared = DigitClassifier().prepare(x)
    assert prepared.shape == (2, 1, 32, 32)
    torch.testing.assert_close(prepared, torch.ones_like(prepared))
    gray = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(DigitClassifier().prepare(gray), gray.float() / 255)
