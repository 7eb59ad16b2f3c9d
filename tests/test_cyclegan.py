"""CycleGAN: the reference nets' sizes, the recipe's pieces, the embedded pair, checkpoints and translation."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from helpers import TINY, TINY_CYCLEGAN, compose_config
from PIL import Image
from pydantic import ValidationError

from gdm.app import run, user_error
from gdm.checkpoints import load_model
from gdm.data.digits_colour import DigitsColourDataModule
from gdm.errors import GdmError
from gdm.images import to_uint8
from gdm.losses import get_target_loss
from gdm.metrics.digits_classifier import accuracy
from gdm.metrics.features import load_digit_classifier
from gdm.models.adversarial import linear_decay
from gdm.models.cyclegan import CycleGAN
from gdm.models.image_pool import ImagePool
from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator

CYCLEGAN_TINY = [*TINY_CYCLEGAN, "logger=none"]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_counts():
    """The counts the reference code prints for 3-channel 256 px images (resnet_9blocks, basic D)."""
    assert n_params(ResnetGenerator((3, 256, 256))) == 11_378_179
    assert n_params(PatchDiscriminator((3, 256, 256))) == 2_764_737
    # 6 residual blocks at 128 px and below: 3 blocks of 2 x (256 x 256 x 3 x 3 + 256) fewer.
    assert n_params(ResnetGenerator((3, 128, 128))) == 11_378_179 - 3 * 2 * (256 * 256 * 9 + 256)


def test_instance_norm_is_torchs_instance_norm():
    from gdm.nets.cyclegan import norm_layer

    x = torch.randn(2, 8, 9, 7) * 3 + 1
    expected = torch.nn.InstanceNorm2d(8, affine=False, track_running_stats=False)(x)
    torch.testing.assert_close(norm_layer("instance", 8)(x), expected, rtol=1e-5, atol=1e-5)


def test_generator_keeps_any_multiple_of_4_size_and_range():
    g = ResnetGenerator((3, 32, 32), ngf=8)
    y = g(torch.randn(2, 3, 36, 44))
    assert y.shape == (2, 3, 36, 44) and y.abs().max() <= 1


def test_patch_discriminator_sees_70x70_patches():
    d = PatchDiscriminator((3, 256, 256), ndf=8, norm="none")  # instance norm's statistics see everything
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    logits = d(x)
    assert logits.shape == (1, 1, 30, 30)
    logits[0, 0, 15, 15].backward()
    rows = x.grad.abs().sum((0, 1, 3)).nonzero()
    cols = x.grad.abs().sum((0, 1, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_image_pool_fills_then_swaps_half_the_time():
    torch.manual_seed(0)
    pool = ImagePool(4, (1, 2, 2))
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert torch.equal(pool.query(first), first) and pool.count == 4  # filling: returned as is
    new = torch.arange(4.0, 2004.0).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    out = pool.query(new)
    older = out[:, 0, 0, 0] < new[:, 0, 0, 0]
    assert 0.45 < older.float().mean().item() < 0.55  # a stored, older fake with p = 1/2
    assert (out[~older] == new[~older]).all()  # else the new fake itself
    assert (pool.images >= 4).all()  # the first fakes were all swapped out by now
    assert set(pool.state_dict()) == {"_extra_state"}  # saved in checkpoints, but not a buffer DDP broadcasts
    assert not list(pool.buffers())
    restored = ImagePool(4, (1, 2, 2))
    restored.load_state_dict(pool.state_dict())
    assert restored.count == 4 and torch.equal(restored.images, pool.images)
    assert torch.equal(ImagePool(0, (1, 2, 2)).query(new), new)


def test_linear_decay_schedule_of_the_reference():
    f = linear_decay(100, 100)
    assert [f(e) for e in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert f(100) == pytest.approx(1 - 1 / 101) and f(199) == pytest.approx(1 / 101)
    assert f(200) == 0.0 and f(250) == 0.0  # never negative past the end


def test_lsgan_target_loss_is_the_reference_ganloss():
    c = get_target_loss("lsgan")
    logits = torch.tensor([0.5, 1.5])
    assert c(logits, True).item() == pytest.approx(0.25)  # MSE to 1, no factor 1/2 for G
    assert c(logits, False).item() == pytest.approx((0.25 + 2.25) / 2)
    with pytest.raises(ValidationError):
        get_target_loss("hinge")


def small_cyclegan(**kwargs) -> CycleGAN:
    return CycleGAN((3, 16, 16), partial(ResnetGenerator, ngf=8, n_blocks=2),
                    partial(PatchDiscriminator, ndf=8, n_layers=1), **kwargs)


def test_fused_calls_equal_separate_calls_with_instance_norm():
    model = small_cyclegan()
    assert model.fuse
    a, b = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    fused = model._fused(model.g_ab, a, b)
    torch.testing.assert_close(fused[0], model.g_ab(a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[1], model.g_ab(b), rtol=1e-5, atol=1e-5)
    batch_norm = CycleGAN((3, 16, 16), partial(ResnetGenerator, ngf=8, n_blocks=2, norm="batch"),
                          partial(PatchDiscriminator, ndf=8, n_layers=1, norm="batch"))
    assert not batch_norm.fuse  # batch statistics would mix the two inputs


def test_module_moves_and_converts_like_any_module():
    """.to() reaches every net and buffer (a method named `_apply` once silently broke it)."""
    model = small_cyclegan(channels_last=True)
    assert model.g_ab.net[1].weight.is_contiguous(memory_format=torch.channels_last)
    model = model.to(torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_embedded_pair_is_unpaired_and_coloured():
    data = DigitsColourDataModule(image_size=16)
    data.setup()
    a, b = data.split("A/train"), data.split("B/train")
    assert a.images.shape[1:] == b.images.shape[1:] == (3, 16, 16)
    assert torch.equal(a.images[:, 0], a.images[:, 1])  # A: grey
    assert (b.images[:, 0] - b.images[:, 1]).abs().mean() > 0.05  # B: colour
    halves = data.source_indices
    assert set(halves["A"].tolist()).isdisjoint(halves["B"].tolist())
    assert len(halves["A"]) + len(halves["B"]) == 1797
    assert len(data.split("train")) == max(len(a), len(b))
    item = data.split("train")[0]
    assert set(item) == {"image_a", "label_a", "image_b", "label_b"}


@pytest.mark.slow
def test_label_classifier_reads_both_domains():
    net = load_digit_classifier("digits_colour")
    data = DigitsColourDataModule(image_size=32)
    for domain in ("A", "B"):
        test = data.split(f"{domain}/test")
        assert accuracy(net, to_uint8(test.images), test.labels) > 0.95, domain


@pytest.mark.slow
def test_training_steps_update_nets_and_checkpoint_holds_pool_and_schedulers(tmp_path):
    cfg = compose_config([*CYCLEGAN_TINY, "trainer.max_epochs=2", "model.n_epochs=1", "model.n_epochs_decay=1"],
                         tmp_path)
    run(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert len(ckpt["optimizer_states"]) == 2 and len(ckpt["lr_schedulers"]) == 2
    # Stepped at the start of each epoch after the first: 1 constant epoch, then lr x (1 - 1/2).
    assert all(s["last_epoch"] == 1 and s["_last_lr"][0] == pytest.approx(1e-4) for s in ckpt["lr_schedulers"])
    assert ckpt["state_dict"]["pool_a._extra_state"]["count"] == 16  # 2 epochs x 2 batches x 4 images
    assert ckpt["state_dict"]["pool_b._extra_state"]["images"].shape == (16, 3, 32, 32)
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(model, CycleGAN) and model.pool_a.count == 16
    # The logged cycle L1 is the mean over every test image of A, once each.
    summary = json.loads((tmp_path / "summary.json").read_text())
    test_a = DigitsColourDataModule(image_size=32).split("A/test").images
    expected = (model.translate(model.translate(test_a, "AtoB"), "BtoA") - test_a).abs().mean().item()
    assert summary["final"]["val/cycle_l1_a"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_bf16_mixed_precision_trains(tmp_path):
    """trainer.precision=bf16-mixed (meant for GPUs; autocast works on the CPU too): the pool takes bf16 fakes."""
    run(compose_config([*CYCLEGAN_TINY, "trainer.precision=bf16-mixed"], tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"]["pool_a._extra_state"]["images"].dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if torch.is_tensor(v))


@pytest.mark.slow
def test_translate_task_keeps_names_and_sizes(tmp_path):
    run(compose_config(CYCLEGAN_TINY, tmp_path / "run"))
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    Image.new("RGB", (45, 30), (200, 30, 30)).save(source / "wide.png")
    Image.new("L", (20, 20), 128).save(source / "sub" / "grey.jpg")
    out = tmp_path / "out"
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for direction in ("AtoB", "BtoA"):
        run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}",
                            f"translate.output={out / direction}", f"translate.direction={direction}",
                            "print_config=false"], tmp_path / "t"))
        with Image.open(out / direction / "wide.png") as img:
            assert img.size == (45, 30) and img.mode == "RGB"
        with Image.open(out / direction / "sub" / "grey.jpg") as img:
            assert img.size == (20, 20)
    run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}",
                        f"translate.output={out / 'small'}", "translate.load_size=16", "print_config=false"],
                       tmp_path / "t2"))
    with Image.open(out / "small" / "wide.png") as img:
        assert img.size == (24, 16)  # short side 16, aspect kept
    with pytest.raises(GdmError, match="at least 32 px"):
        PatchDiscriminator((3, 16, 16))
    with pytest.raises(GdmError, match="inside translate.input"):
        run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}",
                            f"translate.output={source / 'out'}"], tmp_path / "t3"))

    # Read as training reads: EXIF-upright, 16-bit scaled; hidden files skipped; a bad file is named before
    # anything is written.
    from helpers import exif_rotated_jpeg, truncated_jpeg

    photos = tmp_path / "photos"
    (photos / ".ipynb_checkpoints").mkdir(parents=True)
    exif_rotated_jpeg(photos / "phone.jpg", height=12, width=20)
    Image.fromarray(np.full((24, 24), 32768, np.uint16)).save(photos / "deep.png")
    Image.new("RGB", (20, 20)).save(photos / ".ipynb_checkpoints" / "copy.png")
    run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={photos}",
                        f"translate.output={out / 'photos'}", "print_config=false"], tmp_path / "t4"))
    with Image.open(out / "photos" / "phone.jpg") as img:
        assert img.size == (12, 20) and img.getexif().get(0x0112) is None  # upright, like the training data
    assert (out / "photos" / "deep.png").is_file() and not (out / "photos" / ".ipynb_checkpoints").exists()
    truncated_jpeg(photos / "zz_half.jpg")
    with pytest.raises(GdmError, match=r"Cannot read image .*zz_half.jpg"):
        run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={photos}",
                            f"translate.output={out / 'partial'}", "print_config=false"], tmp_path / "t5"))
    assert not (out / "partial").exists()  # nothing half done


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=cyclegan", "data=digits"], "needs two image domains (A and B), which data=DigitsDataModule"),
    (["task=translate", "ckpt_path=/nonexistent.ckpt", "translate.input=x", "translate.output=y"],
     "is not a file"),
    (["task=translate", "translate.input=x"], "needs ckpt_path"),
    (["model=cyclegan", "metrics=fid"], "use metrics=translation"),
    (["model=cyclegan", "data.image_size=34"], "multiples of 4"),
])
@pytest.mark.slow
def test_cyclegan_mistakes_are_one_sentence(overrides, message, tmp_path):
    cfg = compose_config([*CYCLEGAN_TINY, *overrides], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it in an InstantiationException
        run(cfg)
    mistake = user_error(caught.value)
    assert mistake is not None and message in str(mistake), caught.value


@pytest.mark.slow
def test_translate_with_a_gan_checkpoint_is_one_sentence(tmp_path):
    run(compose_config(["data.image_size=16", *TINY, "logger=none"], tmp_path / "gan"))
    (tmp_path / "in").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "in" / "x.png")
    cfg = compose_config(["task=translate", f"ckpt_path={tmp_path / 'gan' / 'checkpoints' / 'last.ckpt'}",
                          f"translate.input={tmp_path / 'in'}", f"translate.output={tmp_path / 'out'}"], tmp_path / "t")
    with pytest.raises(GdmError, match="not a translation model"):
        run(cfg)
