"""The standard Inception FID path, without the network: a local weights file, and a clear sentence
when the download fails."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

from gdm.errors import GdmError
from gdm.metrics.features import INCEPTION_URL, InceptionFeatures, build_features


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file with torch-fidelity's InceptionV3 keys and random values (the real file is 95 MB
    and needs the network). The constructor always loads weights, so its loader is patched once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_local_weights_file_gives_2048_features(random_inception_weights):
    features = build_features("inception", inception_weights=str(random_inception_weights))
    grey = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    out = features(grey)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    colour = grey.expand(-1, 3, -1, -1)
    assert torch.allclose(out, features(colour))  # grey images are fed as 3 equal channels


def test_download_failure_says_how_to_get_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    with pytest.raises(GdmError) as err:
        InceptionFeatures()
    message = str(err.value)
    assert INCEPTION_URL in message and "inception_weights=" in message
    assert "\n" not in message


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(GdmError, match=r"^inception_weights=.*nope.pth is not a file"):
        InceptionFeatures(str(tmp_path / "nope.pth"))
