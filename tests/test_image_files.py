"""Real-world image files: every ordinary file decodes to the right pixels or is refused by name, hidden
files are not data, verification is remembered, and a run that could not learn is refused before it starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config, exif_rotated_jpeg, truncated_jpeg
from PIL import Image

from gdm.app import run, user_error
from gdm.data.image_files import UnreadableImage, find_images, image_paths, open_image, verify_images
from gdm.data.image_folder import ImageFolderDataModule
from gdm.errors import GdmError


def pixels(path, channels=1, **kwargs) -> np.ndarray:
    return np.asarray(open_image(path, channels, **kwargs))


# ---- high bit depth: scaled, never clipped ---------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(32768, 128), (65535, 255), (0, 0), (257 * 10, 10)])
def test_16_bit_grey_png_is_scaled_to_8_bits(tmp_path, value, expected):
    Image.fromarray(np.full((24, 24), value, np.uint16)).save(tmp_path / "g.png")
    assert np.all(pixels(tmp_path / "g.png") == expected)
    assert np.all(pixels(tmp_path / "g.png", channels=3) == expected)  # grey -> RGB keeps the level


def test_32_bit_integer_and_float_tiffs(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, np.int32), mode="I").save(tmp_path / "i.tif")
    assert np.all(pixels(tmp_path / "i.tif") == 128)
    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "f.tif")
    assert np.all(pixels(tmp_path / "f.tif") == 128)
    Image.fromarray(np.full((8, 8), 7.5, np.float32), mode="F").save(tmp_path / "hdr.tif")
    with pytest.raises(UnreadableImage, match=r"hdr.tif is a float image with values in \[7.5, 7.5\]"):
        open_image(tmp_path / "hdr.tif")


def test_16_bit_image_through_the_data_module_is_mid_grey(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((24, 24), 32768, np.uint16)).save(root / f"{i}.png")
    data = ImageFolderDataModule(str(root), image_size=16, channels=1, num_workers=0, val_fraction=0.0,
                                 test_fraction=0.0)
    image = data.split("train")[0]["image"]  # what training and the FID real features see
    assert torch.allclose((image + 1) / 2, torch.full_like(image, 128 / 255))


# ---- transparency, palettes, other modes ------------------------------------------------------


def test_transparent_pixels_are_composited_over_the_background(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent on the left half, opaque on the right
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    white = pixels(tmp_path / "a.png", channels=3)
    assert white[0, 0].tolist() == [255, 255, 255] and white[0, 3].tolist() == [200, 0, 0]
    black = pixels(tmp_path / "a.png", channels=3, background=(0, 0, 0))
    assert black[0, 0].tolist() == [0, 0, 0]
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(tmp_path / "la.png")
    assert pixels(tmp_path / "la.png")[0, 0] == 255


def test_palette_with_transparency_cmyk_and_bilevel(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=1)
    assert pixels(tmp_path / "p.png", channels=3)[0, 0].tolist() == [255, 255, 255]
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert np.all(pixels(tmp_path / "c.jpg", channels=3) >= 250)  # no ink: white
    Image.new("1", (4, 4), 1).save(tmp_path / "b.png")
    assert np.all(pixels(tmp_path / "b.png") == 255)


# ---- EXIF orientation: one upright image for training, metrics and translate ----------------


def test_exif_orientation_is_applied(tmp_path):
    upright = exif_rotated_jpeg(tmp_path / "phone.jpg")
    loaded = pixels(tmp_path / "phone.jpg")
    assert loaded.shape == upright.shape == (10, 6)
    assert np.abs(loaded.astype(int) - upright).max() < 40  # JPEG ringing at the edge only
    assert loaded[:3].mean() > 200 and loaded[-3:].mean() < 50


# ---- decode problems: named, in verification and later --------------------------------------


def flat_folder(root, n=8, size=20):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def test_a_truncated_jpeg_is_named_by_verification(tmp_path):
    root = flat_folder(tmp_path / "imgs")
    truncated_jpeg(root / "half.jpg")
    with pytest.raises(UnreadableImage, match=r"Cannot read image .*half.jpg \(image file is truncated"):
        ImageFolderDataModule(str(root), num_workers=0)
    (root / "junk.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableImage, match=r"half.jpg .*\(and 1 more unreadable files: .*junk.png\)\.$"):
        ImageFolderDataModule(str(root), num_workers=0)
    for i in range(12):
        (root / f"junk{i:02d}.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableImage, match=r"half.jpg .*\(and 13 more unreadable files: .*junk.png, "
                                              r".*junk00.png, .*junk08.png, \.\.\.\)\.$"):
        ImageFolderDataModule(str(root), num_workers=0)


def test_linked_folders_are_read_once_and_a_loop_ends(tmp_path, caplog):
    root = flat_folder(tmp_path / "imgs", n=3)
    (root / "self").symlink_to(".")  # a loop: walked naively it repeats every image, each level deeper
    (root / "again").symlink_to(root)
    outside = flat_folder(tmp_path / "outside" / "photos", n=2)
    (root / "b_photos").symlink_to(outside)
    (root / "a_photos").symlink_to(outside)  # two links to one folder: its images once, by the first name
    with caplog.at_level("WARNING", logger="gdm.data.image_files"):
        files = image_paths(root)
    assert [str(f.relative_to(root)) for f in files] == ["00.png", "01.png", "02.png", "a_photos/00.png",
                                                         "a_photos/01.png"]
    assert "linked folders lead to folders already read" in caplog.text and "and 2 more" in caplog.text


def test_a_broken_link_is_named_by_verification(tmp_path):
    root = flat_folder(tmp_path / "imgs", n=3)
    (root / "broken.jpg").symlink_to(tmp_path / "nonexistent.jpg")
    with pytest.raises(UnreadableImage, match=rf"Cannot read image .*broken.jpg \(No such file or directory: a link to "
                                              rf"{tmp_path / 'nonexistent.jpg'}\): remove or replace the file\.$"):
        ImageFolderDataModule(str(root), num_workers=0)


def test_a_file_that_fails_later_is_named_even_from_a_worker(tmp_path):
    root = flat_folder(tmp_path / "imgs")
    truncated_jpeg(root / "half.jpg")
    data = ImageFolderDataModule(str(root), num_workers=1, verify=False, val_fraction=0.0, test_fraction=0.0,
                                 batch_size=4)
    with pytest.raises(Exception) as caught:  # noqa: B017 - torch re-raises it from the worker process
        list(data.dataloader("train"))
    message = str(user_error(caught.value))
    assert message.startswith("Cannot read image ") and "half.jpg" in message and "\n" not in message


def test_verification_is_remembered_for_unchanged_files(tmp_path, monkeypatch):
    import gdm.data.image_files as image_files

    root = flat_folder(tmp_path / "imgs")
    files = find_images(root)
    decoded = []
    check = image_files.check_decodes
    monkeypatch.setattr(image_files, "check_decodes", lambda p: decoded.append(p.name) or check(p))
    verify_images(files, root=root)
    assert len(decoded) == 8
    verify_images(files, root=root)
    assert len(decoded) == 8  # nothing decoded again
    Image.new("RGB", (20, 20)).save(root / "03.png")  # changed: decoded again, alone
    verify_images(find_images(root), root=root)
    assert decoded[8:] == ["03.png"]


# ---- hidden files and folders are not data ----------------------------------------------------


def test_hidden_folders_are_not_classes(tmp_path):
    root = tmp_path / "pets"
    for folder in ("cat", "dog", ".ipynb_checkpoints", "__MACOSX"):
        flat_folder(root / folder, n=4)
    Image.new("RGB", (20, 20)).save(root / "cat" / ".hidden.png")
    data = ImageFolderDataModule(str(root), num_workers=0)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2
    assert len(data.files) == 8 and all(".ipynb" not in str(f) and "MACOSX" not in str(f) for f in data.files)
    assert [data.labels[i] for i, f in enumerate(data.files) if f.parent.name == "cat"] == [0] * 4


# ---- runs that could not learn are refused before they start ---------------------------------


@pytest.mark.parametrize(("n", "overrides", "message"), [
    (70, [], "data.batch_size=64 is larger than the 62 training images of data=ImageFolderDataModule, and the "
             "last partial batch is dropped, so no training step would run: set data.batch_size to at most 62"),
    (10, ["data.batch_size=4"], "the validation split of data=ImageFolderDataModule is empty"),
    (40, ["data.batch_size=4", "metrics.fid.real_split=val"],
     "the sample metrics need at least 6 images on both sides (FID: 2, k-NN metrics: k + 1), and have "
     "metrics.fid.num_samples=40 generated"),
])
@pytest.mark.slow
def test_too_little_data_is_one_sentence_before_training(tmp_path, n, overrides, message):
    root = flat_folder(tmp_path / "few", n=n, size=16)
    cfg = compose_config(["data=image_folder", f"data.root={root}", "data.image_size=16", "data.num_workers=0",
                          "data.fid_features=digits", *TINY, "logger=none", *overrides], tmp_path / "run")
    with pytest.raises(Exception) as caught:  # noqa: B017 - sometimes wrapped by Hydra
        run(cfg)
    assert message in str(user_error(caught.value))
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


@pytest.mark.slow
def test_errors_name_the_options_as_typed(tmp_path):
    from helpers import run_py

    proc = run_py("model=cgan", "data=digits_colour", "logger=none", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert ("model=cgan needs single images, which data=digits_colour does not have (it has two image "
            "domains (A and B) and class labels in both domains): pick other data, e.g. data=digits") in out
    assert "Traceback" not in out


def test_a_gdm_error_still_reads_as_one_sentence():
    assert str(user_error(GdmError("x"))) == "x"
