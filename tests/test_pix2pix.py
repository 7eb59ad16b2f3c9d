"""pix2pix: the reference nets' sizes, the paired data (aligned crops, side-by-side files), the losses, the
paired metrics, the pix2pix downloads and translation with a pix2pix checkpoint."""

from __future__ import annotations

import json
import tarfile
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_PIX2PIX, compose_config
from PIL import Image
from pydantic import ValidationError

from gdm.app import run, user_error
from gdm.checkpoints import load_model
from gdm.data import download as dl
from gdm.data.digits_paired import DigitsPairedDataModule
from gdm.data.paired import paired_transform
from gdm.data.paired_folder import PairedFileDataset, PairedFolderDataModule, split_side_by_side
from gdm.errors import GdmError
from gdm.metrics.paired import paired_scores
from gdm.models.pix2pix import Pix2Pix
from gdm.nets.cyclegan import PatchDiscriminator
from gdm.nets.pix2pix import UnetGenerator

PIX2PIX_TINY = [*TINY_PIX2PIX, "logger=none"]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_counts():
    """The counts the reference code prints for pix2pix (3 -> 3 channels, batch norm)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        assert n_params(UnetGenerator((3, 256, 256), num_downs=8)) == 54_413_955
        assert n_params(UnetGenerator((3, 128, 128), num_downs=7)) == 41_828_995
        assert n_params(PatchDiscriminator((6, 256, 256), norm="batch")) == 2_768_705
    with pytest.raises(GdmError, match="multiples of 256"):
        UnetGenerator((3, 128, 128), num_downs=8)


def test_unet_shape_dropout_and_skip():
    g = UnetGenerator((3, 64, 64), num_downs=6, ngf=4)
    y = g(torch.randn(2, 3, 64, 128))  # any multiple of 2**num_downs
    assert y.shape == (2, 3, 64, 128) and y.abs().max() <= 1
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 1  # num_downs - 5
    with torch.device("meta"):
        assert sum(isinstance(m, torch.nn.Dropout) for m in UnetGenerator((3, 256, 256), ngf=2).modules()) == 3


def test_patch_discriminator_sees_70x70_patches_of_both_images():
    d = PatchDiscriminator((6, 256, 256), ndf=8, norm="none")  # batch norm's statistics see everything
    x = torch.randn(1, 6, 256, 256, requires_grad=True)
    logits = d(x)
    assert logits.shape == (1, 1, 30, 30)
    logits[0, 0, 15, 15].backward()
    rows = x.grad.abs().sum((0, 1, 3)).nonzero()
    cols = x.grad.abs().sum((0, 1, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    assert (x.grad.abs().sum((0, 2, 3)) > 0).all()  # input and output channels alike


def test_paired_crop_and_flip_keep_a_and_b_aligned(tmp_path):
    """A and B are transformed as one tensor: B = A stays B = A under every random crop and flip."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([a, a], 1)).save(tmp_path / "ab.png")
    dataset = PairedFileDataset([tmp_path / "ab.png"], None, paired_transform(16, 24, train=True, flip=True), 3)
    torch.manual_seed(0)
    crops = [dataset[0] for _ in range(12)]
    assert all(torch.equal(item["image_a"], item["image_b"]) for item in crops)
    assert crops[0]["image_a"].shape == (3, 16, 16)
    assert len({item["image_a"].sum().item() for item in crops}) > 1  # the crops did move


def test_side_by_side_splitting(tmp_path):
    image = torch.arange(2 * 3 * 10).view(2, 3, 10)
    left, right = split_side_by_side(image)
    assert torch.equal(left, image[..., :5]) and torch.equal(right, image[..., 5:])
    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    Image.fromarray(np.concatenate([red, blue], 1)).save(tmp_path / "x.png")
    item = PairedFileDataset([tmp_path / "x.png"], None, paired_transform(8, 8, train=False, flip=False), 3)[0]
    assert item["image_a"][0].min() == 1 and item["image_a"][2].max() == -1  # A: the left half, red
    assert item["image_b"][2].min() == 1 and item["image_b"][0].max() == -1  # B: the right half, blue


def test_aligned_folders_pair_by_name(tmp_path, paired_folder):
    root = tmp_path / "aligned"
    for split in ("train", "test"):
        for i, path in enumerate(sorted((paired_folder / split).glob("*.png"))):
            a, b = split_side_by_side(torch.from_numpy(np.asarray(Image.open(path))).permute(2, 0, 1))
            for domain, image in (("A", a), ("B", b)):
                (root / f"{split}{domain}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"{split}{domain}" / f"{i}.png")
    folders = PairedFolderDataModule(str(root), image_size=32, load_size=32, num_workers=0)
    side = PairedFolderDataModule(str(paired_folder), image_size=32, load_size=32, num_workers=0)
    for split in ("train", "val", "test"):  # val falls back to test/
        for key in ("image_a", "image_b"):
            assert torch.equal(folders.split(split)[1][key], side.split(split)[1][key])
    assert len(side.split("B/test")) == 3 and set(side.split("B/test")[0]) == {"image"}
    (root / "testB" / "0.png").rename(root / "testB" / "zero.png")
    with pytest.raises(GdmError, match="must hold the same file names"):
        PairedFolderDataModule(str(root), image_size=32, load_size=32)
    with pytest.raises(GdmError, match="python -m gdm.data.download facades"):
        PairedFolderDataModule(str(tmp_path / "facades"), name="facades")


def test_embedded_pair_is_paired():
    data = DigitsPairedDataModule(image_size=16)
    a, b = data.split("A/test"), data.split("B/test")
    assert len(data.split("train")) == 1437 and len(a) == len(b) == 180
    assert torch.equal(a[3]["image"][0], a[3]["image"][1]) and a[3]["label"] == b[3]["label"]
    colour = data.split("test").images_b
    assert (colour[:, 0] - colour[:, 1]).abs().mean() > 0.02  # B: colour
    # The same digit: B's strokes are where A's are (B = |patch - digit|, the digit lightens B's dark patch).
    strokes = a[3]["image"][0] > 0
    assert b[3]["image"].mean(0)[strokes].mean() > b[3]["image"].mean(0)[~strokes].mean()
    with pytest.raises(ValidationError) as caught:
        DigitsPairedDataModule(direction="CtoD")
    assert [e["loc"] for e in caught.value.errors()] == [("direction",)]


def small_pix2pix(**kwargs) -> Pix2Pix:
    return Pix2Pix((3, 32, 32), partial(UnetGenerator, num_downs=5, ngf=4),
                   partial(PatchDiscriminator, ndf=4, n_layers=2, norm="batch"), **kwargs)


@pytest.mark.slow
def test_losses_match_a_direct_computation():
    torch.manual_seed(0)
    model = small_pix2pix()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fake = model.net_g(x)
    d = model.d_loss(x, y, fake.detach())
    real_logits, fake_logits = model.net_d(torch.cat([x, y], 1)), model.net_d(torch.cat([x, fake], 1))
    bce = F.binary_cross_entropy_with_logits
    expected_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                        + bce(fake_logits, torch.zeros_like(fake_logits)))
    torch.testing.assert_close(d.total, expected_d)
    assert d.logs["d_loss"] is d.total
    g = model.g_loss(x, y, fake)
    expected_g = bce(fake_logits, torch.ones_like(fake_logits)) + 100 * (fake - y).abs().mean()
    torch.testing.assert_close(g.total, expected_g)


def test_paper_inference_is_per_image_fixed_and_leaves_running_stats():
    torch.manual_seed(0)
    model = small_pix2pix(direction="BtoA")
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    batched = model.translate(x)
    assert torch.equal(torch.get_rng_state(), rng)  # the seeded masks leave the training run's stream alone
    torch.testing.assert_close(torch.cat([model.translate(x[i:i + 1], "BtoA") for i in range(5)]), batched)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.net_g.training  # left as it was
    with pytest.raises(GdmError, match="translates BtoA only"):
        model.translate(x, "AtoB")
    eval_mode = small_pix2pix(inference="eval")
    eval_mode.load_state_dict(model.state_dict())
    assert not torch.allclose(eval_mode.translate(x), batched)  # running statistics instead


def test_paired_scores():
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    same = paired_scores(real, real)
    assert same["l1"].max() == 0 and same["ssim"].min() > 0.999
    shifted = (real + 0.2).clamp(-1, 1)
    scores = paired_scores(shifted, real)
    from gdm.images import to_uint8
    diff = to_uint8(shifted).float() - to_uint8(real).float()
    torch.testing.assert_close(scores["l1"], diff.abs().flatten(1).mean(1) / 127.5)
    torch.testing.assert_close(scores["psnr"], 10 * torch.log10(255**2 / diff.pow(2).flatten(1).mean(1)))


@pytest.mark.slow
def test_training_checkpoint_metrics_and_translate_task(tmp_path):
    """A tiny run on the embedded pair; the checkpoint translates folders at any size, in its direction."""
    run(compose_config([*PIX2PIX_TINY, "data.direction=BtoA", "data.test_fraction=0.05"], tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"val/fid_digits_colour", "val/l1", "val/psnr", "val/ssim", "val/label_kept"} <= set(summary["final"])
    assert (tmp_path / "run" / "samples" / "pairs_BtoA_last.png").is_file()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert len(saved["optimizer_states"]) == 2 and len(saved["lr_schedulers"]) == 2
    model = load_model(ckpt)
    assert isinstance(model, Pix2Pix) and model.direction == "BtoA"
    # The logged L1 is the mean over every test pair, once each.
    test = DigitsPairedDataModule(test_fraction=0.05).split("test")
    assert len(test) == 90
    fake = model.translate(test.images_b)
    assert summary["final"]["val/l1"] == pytest.approx(paired_scores(fake, test.images_a)["l1"].mean().item(),
                                                       rel=1e-4)
    source = tmp_path / "in"
    source.mkdir()
    Image.new("RGB", (45, 30), (200, 30, 30)).save(source / "wide.png")
    Image.new("RGB", (20, 20), (0, 90, 30)).save(source / "small.jpg")
    out = tmp_path / "out"
    run(compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}",
                        f"translate.output={out}", "print_config=false"], tmp_path / "t"))
    with Image.open(out / "wide.png") as img:
        assert img.size == (45, 30) and img.mode == "RGB"
    with Image.open(out / "small.jpg") as img:
        assert img.size == (20, 20)
    cfg = compose_config(["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}",
                          f"translate.output={tmp_path / 'out2'}", "translate.direction=AtoB"], tmp_path / "t2")
    with pytest.raises(GdmError, match="translates BtoA only"):
        run(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=digits"], "needs aligned pairs (A[i] and B[i] the same scene) and two image domains (A and B), which "
                      "data=DigitsDataModule"),
    (["data=digits_colour"], "needs aligned pairs (A[i] and B[i] the same scene), which data=DigitsColourDataModule"),
    (["metrics=fid"], "use metrics=translation"),
    (["data.image_size=48"], "multiples of 32"),
])
@pytest.mark.slow
def test_pix2pix_mistakes_are_one_sentence(overrides, message, tmp_path):
    cfg = compose_config([*PIX2PIX_TINY, *overrides], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it in an InstantiationException
        run(cfg)
    mistake = user_error(caught.value)
    assert mistake is not None and message in str(mistake), caught.value


# ---- pix2pix downloads (tar.gz, from a local server only) ----------------------------------------


def make_tarball(path, name: str = "facades") -> None:
    src = path.parent / f"src-{name}"
    for split in ("train", "val", "test"):
        (src / name / split).mkdir(parents=True)
        Image.new("RGB", (16, 8), (10, 20, 30)).save(src / name / split / "1.jpg")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(src / name, arcname=name)


def test_pix2pix_download_from_server_and_archive(tmp_path, monkeypatch):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    www = tmp_path / "www"
    www.mkdir()
    make_tarball(www / "facades.tar.gz")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        monkeypatch.setenv(dl.PAIRED_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        assert dl.main(["facades", "--data-dir", str(tmp_path / "data")]) == 0
        assert sorted(p.name for p in (tmp_path / "data" / "facades").iterdir()) == ["test", "train", "val"]
        with pytest.raises(GdmError, match=r"maps.tar.gz failed \(HTTP 404.*--archive FILE"):
            dl.download("maps", tmp_path / "data")
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["facades"]  # nothing half-done
    assert dl.dataset_url("facades") == f"http://127.0.0.1:{server.server_address[1]}/facades.tar.gz"
    monkeypatch.delenv(dl.PAIRED_URL_ENV)
    assert dl.dataset_url("edges2shoes", kind="pix2pix") == \
        "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/edges2shoes.tar.gz"
    assert dl.dataset_kind("facades") == "pix2pix" and dl.dataset_kind("facades", "cyclegan") == "cyclegan"
    make_tarball(tmp_path / "n2d.tar.gz", name="night2day")
    assert dl.main(["night2day", "--data-dir", str(tmp_path / "d2"), "--archive", str(tmp_path / "n2d.tar.gz")]) == 0
    data = PairedFolderDataModule(str(tmp_path / "d2" / "night2day"), image_size=8, load_size=8, num_workers=0)
    assert data.split("test")[0]["image_a"].shape == (3, 8, 8)


def test_single_images_in_a_side_by_side_folder_are_warned_about(tmp_path, paired_folder, caplog):
    with caplog.at_level("WARNING", logger="gdm.data.paired_folder"):
        PairedFolderDataModule(str(paired_folder), image_size=32, load_size=32, num_workers=0)
    assert "not twice as wide as tall" not in caplog.text  # pairs: 2:1
    root = tmp_path / "singles"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(root / split / f"{i}.png")
    with caplog.at_level("WARNING", logger="gdm.data.paired_folder"):
        PairedFolderDataModule(str(root), image_size=32, load_size=32, num_workers=0)
    assert f"{root / 'train' / '0.png'} is 64x64 px, not twice as wide as tall" in caplog.text
    assert f"{root / 'test' / '0.png'} is 64x64 px" in caplog.text
