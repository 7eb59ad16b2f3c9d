"""CycleGAN data: the dataset download (from a local HTTP server only), its failures, and the unpaired
folder data module on the downloaded folder."""

from __future__ import annotations

import functools
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdm.data import download as dl
from gdm.errors import GdmError

ROOT = Path(__file__).resolve().parents[1]
NAME = "horse2zebra"
COUNTS = {"trainA": 3, "trainB": 5, "testA": 2, "testB": 2}


def png_bytes(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path: Path, top: str = NAME, folders: dict[str, int] = COUNTS) -> dict[str, bytes]:
    """A zip laid out like the official ones (`top/trainA/0.png`, ...); returns member -> bytes."""
    members = [f"{top}/{folder}/{i}.png" for folder, n in folders.items() for i in range(n)]
    files = {member: png_bytes(seed) for seed, member in enumerate(members)}
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return files


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www holding horse2zebra.zip; yields (url_base, member -> bytes)."""
    www = tmp_path / "www"
    www.mkdir()
    files = make_zip(www / f"{NAME}.zip")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", files
    server.shutdown()
    server.server_close()


@pytest.fixture
def downloaded(tmp_path, served) -> Path:
    return dl.download(NAME, tmp_path / "data", url_base=served[0])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gdm.data.download", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**os.environ, **(env or {})})


def assert_installed(data_dir: Path, files: dict[str, bytes]) -> None:
    assert sorted(p.name for p in data_dir.iterdir()) == [NAME]  # no temporary zip or folder left
    for folder, n in COUNTS.items():
        assert len(list((data_dir / NAME / folder).iterdir())) == n
    for member, data in files.items():
        assert (data_dir / member).read_bytes() == data


def assert_nothing_left(data_dir: Path) -> None:
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


# ---- download ------------------------------------------------------------------------------


def test_download_from_server(tmp_path, served, capsys):
    url_base, files = served
    target = dl.download(NAME, tmp_path / "data", url_base=url_base)
    assert target == tmp_path / "data" / NAME
    assert_installed(tmp_path / "data", files)
    # A complete dataset is left alone, even when the server has gone.
    (target / "trainA" / "0.png").write_bytes(png_bytes(99))
    capsys.readouterr()
    dl.download(NAME, tmp_path / "data", url_base=f"http://127.0.0.1:{closed_port()}/")
    assert "already complete" in capsys.readouterr().out
    assert (target / "trainA" / "0.png").read_bytes() == png_bytes(99)
    # --force fetches it again.
    dl.download(NAME, tmp_path / "data", url_base=url_base, force=True)
    assert_installed(tmp_path / "data", files)


def test_cli_download_uses_env_url(tmp_path, served):
    url_base, files = served
    result = cli(NAME, "--data-dir", str(tmp_path / "data"), env={dl.URL_ENV: url_base})
    assert result.returncode == 0, result.stderr
    assert_installed(tmp_path / "data", files)


@pytest.mark.parametrize("failure", ["404", "refused"])
def test_download_failure_names_url_and_leaves_nothing(tmp_path, served, failure):
    url_base = served[0] if failure == "404" else f"http://127.0.0.1:{closed_port()}/"
    name = "monet2photo" if failure == "404" else NAME  # the server has no monet2photo.zip
    with pytest.raises(GdmError, match="--archive FILE") as err:
        dl.download(name, tmp_path / "data", url_base=url_base)
    assert f"{url_base}{name}.zip" in str(err.value)
    assert ("HTTP 404" in str(err.value)) == (failure == "404")
    assert_nothing_left(tmp_path / "data")


def test_cli_failure_is_one_line_and_exit_2(tmp_path):
    url_base = f"http://127.0.0.1:{closed_port()}"
    result = cli(NAME, "--data-dir", str(tmp_path / "data"), "--url-base", url_base)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"{url_base}/{NAME}.zip" in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_left(tmp_path / "data")


def test_unknown_name_lists_datasets(tmp_path):
    with pytest.raises(GdmError, match="'tiny2set' is not a CycleGAN or pix2pix dataset") as err:
        dl.download("tiny2set", tmp_path / "data")
    assert all(name in str(err.value) for name in dl.DATASETS)
    assert dl.main(["tiny2set", "--data-dir", str(tmp_path / "data")]) == 2
    assert_nothing_left(tmp_path / "data")


def test_install_from_local_zip(tmp_path, capsys):
    files = make_zip(tmp_path / "h2z-copy.zip")
    assert dl.main([NAME, "--data-dir", str(tmp_path / "data"), "--zip", str(tmp_path / "h2z-copy.zip")]) == 0
    assert_installed(tmp_path / "data", files)
    assert (tmp_path / "h2z-copy.zip").is_file()  # the user's own file is kept
    # A renamed top folder is found too.
    make_zip(tmp_path / "other.zip", top="something_else")
    dl.download(NAME, tmp_path / "data2", archive_path=tmp_path / "other.zip")
    assert (tmp_path / "data2" / NAME / "testB" / "1.png").is_file()
    assert dl.main([NAME, "--data-dir", str(tmp_path / "data3"), "--zip", str(tmp_path / "nope.zip")]) == 2
    assert "nope.zip is not a file" in capsys.readouterr().err


def test_bad_or_incomplete_zip(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"<html>not a zip</html>")
    with pytest.raises(GdmError, match="bad.zip is not a readable zip or tar.gz file"):
        dl.download(NAME, tmp_path / "data", archive_path=tmp_path / "bad.zip")
    make_zip(tmp_path / "partial.zip", folders={"trainA": 2, "trainB": 2, "testA": 1})
    with pytest.raises(GdmError, match=f"partial.zip has no images in {NAME}/testB/"):
        dl.download(NAME, tmp_path / "data", archive_path=tmp_path / "partial.zip")
    assert_nothing_left(tmp_path / "data")


def test_partial_folder_is_replaced_only_with_force(tmp_path):
    (tmp_path / "data" / NAME / "trainA").mkdir(parents=True)
    files = make_zip(tmp_path / "h2z.zip")
    with pytest.raises(GdmError, match="pass --force"):
        dl.download(NAME, tmp_path / "data", archive_path=tmp_path / "h2z.zip")
    dl.download(NAME, tmp_path / "data", archive_path=tmp_path / "h2z.zip", force=True)
    assert_installed(tmp_path / "data", files)


def test_download_command():
    assert dl.download_command("monet2photo", Path("data")) == "python -m gdm.data.download monet2photo --data-dir data"
    assert dl.download_command("maps", "/my data") == "python -m gdm.data.download maps --data-dir '/my data'"


# ---- the data module -----------------------------------------------------------------------


def test_datamodule_on_downloaded_folder(downloaded):
    import torch

    from gdm.data.unpaired_folder import UnpairedFolderDataModule

    dm = UnpairedFolderDataModule(str(downloaded), name=NAME, image_size=16, load_size=18, num_workers=0)
    assert dm.image_shape == (3, 16, 16)
    dm.setup()
    assert len(dm.split("train")) == max(COUNTS["trainA"], COUNTS["trainB"])
    assert len(dm.split("test")) == max(COUNTS["testA"], COUNTS["testB"])
    assert len(dm.split("A/test")) == COUNTS["testA"] and len(dm.split("B/train")) == COUNTS["trainB"]
    item = dm.split("train")[0]
    for key in ("image_a", "image_b"):
        assert item[key].shape == (3, 16, 16) and item[key].dtype == torch.float32
        assert item[key].min() >= -1 and item[key].max() <= 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image_a"].shape == (1, 3, 16, 16)


def test_missing_folder_says_how_to_download(downloaded):
    import shutil

    from gdm.data.unpaired_folder import UnpairedFolderDataModule

    shutil.rmtree(downloaded / "testB")
    command = dl.download_command(NAME, downloaded.parent)
    with pytest.raises(GdmError, match="testB/") as err:
        UnpairedFolderDataModule(str(downloaded), name=NAME)
    assert command in str(err.value) and "trainA/" not in str(err.value)
    # Any other folder: no download command, the layout instead.
    with pytest.raises(GdmError, match="testB/") as err:
        UnpairedFolderDataModule(str(downloaded))
    assert "gdm.data.download" not in str(err.value) and "sub-folders" in str(err.value)


def test_missing_root_says_how_to_download(tmp_path):
    from gdm.data.unpaired_folder import UnpairedFolderDataModule

    with pytest.raises(GdmError) as err:
        UnpairedFolderDataModule(str(tmp_path / "data" / "monet2photo"), name="monet2photo")
    assert dl.download_command("monet2photo", tmp_path / "data") in str(err.value)
    assert all(f"{f}/" in str(err.value) for f in dl.FOLDERS)
