"""Fetch a standard CycleGAN dataset: `python -m gdm.data.download monet2photo [--data-dir data]`.

The zips are the CycleGAN authors' (`<url-base>/<name>.zip`, base overridable with `--url-base` or the
GDM_CYCLEGAN_URL environment variable); each holds `<name>/trainA/ trainB/ testA/ testB/`, which lands
in `<data-dir>/<name>/`, where `data=monet`, `data=horse2zebra`, ... read it. On a machine without
network, download the zip elsewhere and install it with `--zip FILE`.

The zip and its extraction go to a temporary folder inside the data dir, and the dataset folder appears
by one rename once all four sub-folders hold images, so an interrupted or failed download never leaves a
`<name>/` folder that looks complete. This module imports no torch, so the command starts at once.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from gdm.data.image_files import image_paths
from gdm.errors import GdmError

URL_BASE = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
URL_ENV = "GDM_CYCLEGAN_URL"
# The two-domain sets of the reference repo's datasets/download_cyclegan_dataset.sh (its `ae_photos`
# is a folder of test photos only, not a training set, and its authors do not serve `cityscapes`, for
# licence reasons: both are left out).
DATASETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
            "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower")
FOLDERS = ("trainA", "trainB", "testA", "testB")
CHUNK = 1 << 20


def download_command(name: str, data_dir: str | Path = "data") -> str:
    """The shell command that puts dataset `name` into `data_dir/name`."""
    return f"python -m gdm.data.download {name} --data-dir {shlex.quote(str(data_dir))}"


def dataset_url(name: str, url_base: str | None = None) -> str:
    base = url_base or os.environ.get(URL_ENV) or URL_BASE
    return f"{base.rstrip('/')}/{name}.zip"


def missing_folders(root: Path) -> list[str]:
    """The sub-folders of `root` that are absent or hold no image."""
    return [f for f in FOLDERS if not image_paths(root / f)]


def fetch(url: str, dest: Path, name: str, data_dir: Path) -> None:
    """Stream `url` into `dest`, printing progress about every 10%."""
    offline = (f"check the network, or download it elsewhere and run "
               f"`python -m gdm.data.download {name} --zip FILE --data-dir {shlex.quote(str(data_dir))}` "
               f"(or unzip it into {data_dir / name})")
    print(f"Downloading {url}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total, done, shown = int(response.headers.get("Content-Length") or 0), 0, 0
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                step = done * 10 // total if total else done // (100 * CHUNK)
                if step > shown:
                    shown = step
                    print(f"  {done / 2**20:.1f} MiB" + (f" of {total / 2**20:.1f} MiB" if total else ""), flush=True)
    except urllib.error.HTTPError as err:
        raise GdmError(f"Downloading {url} failed (HTTP {err.code} {err.reason}): {offline}.") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise GdmError(f"Downloading {url} failed ({reason}): {offline}.") from None
    if total and done != total:
        raise GdmError(f"Downloading {url} stopped after {done} of {total} bytes: {offline}.")


def dataset_root(extracted: Path, name: str) -> Path:
    """Where the four sub-folders are in an extracted zip: `<name>/` as in the official zips, else a
    single top folder (a renamed zip) or the top level itself."""
    tops = [p for p in extracted.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    for root in (extracted / name, *(tops if len(tops) == 1 else ()), extracted):
        if not missing_folders(root):
            return root
    return extracted / name


def download(name: str, data_dir: str | Path = "data", url_base: str | None = None,
             zip_path: str | Path | None = None, force: bool = False) -> Path:
    """Put dataset `name` into `data_dir/name` from the server (or from the local zip `zip_path`)."""
    if name not in DATASETS:
        raise GdmError(f"{name!r} is not a CycleGAN dataset: choose one of {', '.join(DATASETS)}.")
    data_dir = Path(data_dir).expanduser()
    target = data_dir / name
    if target.exists():
        missing = missing_folders(target)
        if not missing and not force:
            print(f"{target} is already complete (trainA/, trainB/, testA/, testB/): nothing to do "
                  "(--force replaces it).")
            return target
        if missing and not force:  # someone's partial copy: replace it only when asked to
            raise GdmError(f"{target} exists but has no images in {', '.join(m + '/' for m in missing)}: "
                           "remove it, or pass --force to replace it.")
    source = Path(zip_path).expanduser() if zip_path is not None else None
    if source is not None and not source.is_file():
        raise GdmError(f"--zip {source} is not a file: point it at a downloaded {name}.zip.")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Inside data_dir, so the final rename stays on one file system; removed on any failure or Ctrl-C.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=data_dir) as tmp:
        tmp = Path(tmp)
        what = source
        if source is None:
            what, source = dataset_url(name, url_base), tmp / f"{name}.zip"
            fetch(what, source, name, data_dir)
        try:
            with zipfile.ZipFile(source) as archive:
                archive.extractall(tmp / "extracted")  # zipfile drops absolute paths and `..` parts
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise GdmError(f"{what} is not a readable zip file ({err}): download it again.") from None
        root = dataset_root(tmp / "extracted", name)
        missing = missing_folders(root)
        if missing:
            raise GdmError(f"{what} has no images in {', '.join(name + '/' + m + '/' for m in missing)}: "
                           f"it is not the {name} dataset; download it again.")
        if target.exists():
            shutil.rmtree(target)  # --force
        root.rename(target)
    counts = ", ".join(f"{f} {sum(1 for p in (target / f).rglob('*') if p.is_file())}" for f in FOLDERS)
    print(f"{name} is in {target} ({counts} files). Train on it: python run.py model=cyclegan data=unpaired "
          f"data.root={shlex.quote(str(target))} data.name={name}  (data=monet etc. for the sets with a config)",
          flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdm.data.download", description="Download a standard CycleGAN dataset into DATA_DIR/NAME.")
    parser.add_argument("name", metavar="NAME", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--data-dir", default="data", help="where datasets live (paths.data_dir; default: data)")
    parser.add_argument("--url-base", default=None,
                        help=f"server folder holding NAME.zip (default: ${URL_ENV} or {URL_BASE})")
    parser.add_argument("--zip", default=None, metavar="FILE", help="install from this downloaded zip instead")
    parser.add_argument("--force", action="store_true", help="replace an existing DATA_DIR/NAME")
    args = parser.parse_args(argv)
    try:
        download(args.name, args.data_dir, args.url_base, args.zip, args.force)
    except GdmError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
