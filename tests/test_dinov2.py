"""DINOv2 features for FD_DINOv2, without the network: a tiny random DINOv2-style ViT saved in timm's and
in Meta's checkpoint format stands in for the 1.2 GB ViT-L/14 file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.models import register_model  # noqa: E402
from timm.models.vision_transformer import _create_vision_transformer  # noqa: E402

from gdm.errors import GdmError  # noqa: E402
from gdm.metrics.dinov2 import (  # noqa: E402
    DINOv2Features,
    _pil_bicubic_resize,
    _resample_pos_embed_like_dinov2,
)

TINY = "gdm_test_tiny_patch14_dinov2"


if TINY not in timm.list_models(TINY):

    @register_model
    def gdm_test_tiny_patch14_dinov2(pretrained: bool = False, **kwargs):
        """vit_*_patch14_dinov2 with 2 blocks of width 64: ~150k parameters."""
        args = dict(patch_size=14, embed_dim=64, depth=2, num_heads=2, init_values=1e-5)
        return _create_vision_transformer(TINY, pretrained=pretrained, **dict(args, **kwargs))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny model's weights at DINOv2's 518 training size (37x37 position grid), as timm's
    `model.safetensors` and as Meta's `*_pretrain.pth` (same names plus `mask_token`)."""
    torch.manual_seed(0)
    net = timm.create_model(TINY, num_classes=0, img_size=518)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # LayerScale starts at 1e-5: make every block count
    state = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
    root = tmp_path_factory.mktemp("dinov2")
    save_file(state, str(root / "model.safetensors"))
    torch.save({**state, "mask_token": torch.zeros(1, 64)}, root / "dinov2_tiny_pretrain.pth")
    return state, root / "model.safetensors", root / "dinov2_tiny_pretrain.pth"


@pytest.fixture(scope="module")
def features(saved):
    return DINOv2Features(str(saved[1]), model_name=TINY)


@pytest.mark.parametrize("fmt", ["timm", "meta"])
def test_loads_both_checkpoint_formats(saved, fmt):
    state, timm_file, meta_file = saved
    f = DINOv2Features(str(timm_file if fmt == "timm" else meta_file), model_name=TINY)
    loaded = f.net.state_dict()
    assert torch.equal(loaded["blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    assert torch.equal(loaded["cls_token"], state["cls_token"])
    # 37x37 -> 16x16 the way Meta's hub model interpolates at 224 input, not timm's antialiased filter
    assert loaded["pos_embed"].shape == (1, 1 + 16 * 16, 64)
    assert torch.equal(loaded["pos_embed"], _resample_pos_embed_like_dinov2(state["pos_embed"], (16, 16)))
    assert f.num_features == 64


def test_features_shape_dtype_determinism_and_grey(features):
    torch.manual_seed(1)
    grey = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    out = features(grey)
    assert out.shape == (3, features.num_features) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and not out.requires_grad
    assert torch.equal(out, features(grey))
    assert torch.equal(out, features(grey.expand(-1, 3, -1, -1).contiguous()))  # grey = 3 equal channels
    assert not torch.allclose(out[0], out[1])  # different images, different features

    full = features(torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8))
    assert full.shape == (2, features.num_features) and full.dtype == torch.float32


def test_stays_in_eval_mode_and_rejects_float_images(features):
    assert not features.train().training and not features.net.training
    with pytest.raises(ValueError, match="uint8"):
        features(torch.rand(1, 3, 32, 32))


def test_resize_matches_pil_bicubic():
    """dgm-eval resizes PIL images with Resize((224, 224), BICUBIC)."""
    rng = np.random.default_rng(0)
    for h, w in [(28, 28), (64, 48), (300, 300)]:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(arr).resize((224, 224), Image.BICUBIC)).astype(np.int16)
        ours = _pil_bicubic_resize(torch.from_numpy(arr).permute(2, 0, 1)[None], 224)[0].permute(1, 2, 0)
        diff = np.abs(ours.numpy().astype(np.int16) - pil)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005
    same = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    assert torch.equal(_pil_bicubic_resize(same, 224), same.double())


def test_protocol_records_the_file_and_preprocessing(features, saved):
    proto = features.protocol()
    assert proto["weights_sha256"] == hashlib.sha256(saved[1].read_bytes()).hexdigest()
    assert proto["weights_file"] == str(saved[1])
    assert proto["resize"] == {"size": 224, "method": "bicubic", "antialias": True}
    assert proto["features"] == "dinov2" and proto["model"] == TINY and proto["num_features"] == 64
    assert proto["normalize"] == "imagenet"
    json.dumps(proto)


def test_construction_leaves_the_global_rng_alone(saved):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    DINOv2Features(str(saved[1]), model_name=TINY)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("path", [None, "/nonexistent/dinov2_vitl14_pretrain.pth"])
def test_missing_weights_say_how_to_get_them(path):
    with pytest.raises(GdmError) as err:
        DINOv2Features(path)
    msg = str(err.value)
    assert "dinov2_weights" in msg
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in msg
    assert "dinov2_weights=/path" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["corrupt.pth", "corrupt.safetensors"])
def test_corrupt_file_names_the_file(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(GdmError) as err:
        DINOv2Features(str(bad), model_name=TINY)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg and "Traceback" not in msg


def test_wrong_keys_name_the_first_missing_key(tmp_path, saved):
    state = {k: v for k, v in saved[0].items() if k != "norm.weight"}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(GdmError, match=r"partial\.pth.*'norm\.weight'"):
        DINOv2Features(str(path), model_name=TINY)


def test_weights_of_another_size_name_the_mismatch(tmp_path):
    with torch.random.fork_rng(devices=[]):
        other = timm.create_model(TINY, num_classes=0, img_size=518, embed_dim=32)
    path = tmp_path / "vitb.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(GdmError, match=r"vitb\.pth.*'cls_token' of shape \(1, 1, 32\)"):
        DINOv2Features(str(path), model_name=TINY)
