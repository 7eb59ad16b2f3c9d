"""Fetch a standard CycleGAN or pix2pix dataset: `python -m gdm.data.download monet2photo [--data-dir data]`.

- CycleGAN (unpaired) sets are the authors' zips (`<url-base>/<name>.zip`, base overridable with
  `--url-base` or the GDM_CYCLEGAN_URL environment variable); each holds `<name>/trainA/ trainB/ testA/
  testB/`, read by `data=monet`, `data=horse2zebra`, ...
- pix2pix (paired) sets are the authors' tarballs (`<url-base>/<name>.tar.gz`, GDM_PIX2PIX_URL); each holds
  `<name>/train/ val/ [test/]` of side-by-side A | B images, read by `data=facades`, `data=maps`, ...
  `facades` and `maps` exist in both kinds: the name alone means the paired set (`--kind cyclegan` for the
  unpaired zip).
Either lands in `<data-dir>/<name>/`. On a machine without network, download the archive elsewhere and
install it with `--archive FILE`.

The archive and its extraction go to a temporary folder inside the data dir, and the dataset folder
appears by one rename once its sub-folders hold images, so an interrupted or failed download never leaves
a `<name>/` folder that looks complete. This module imports no torch, so the command starts at once.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import shutil
import sys
import tarfile
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
PAIRED_URL_BASE = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
PAIRED_URL_ENV = "GDM_PIX2PIX_URL"
# The pix2pix reference's datasets/download_pix2pix_dataset.sh sets (cityscapes is not served, licence).
PAIRED_DATASETS = ("facades", "maps", "edges2shoes", "edges2handbags", "night2day")
KINDS = ("cyclegan", "pix2pix")
CHUNK = 1 << 20


def dataset_kind(name: str, kind: str | None = None) -> str:
    """cyclegan or pix2pix: `kind` if given, else pix2pix for the paired sets' names."""
    if kind is not None:
        if kind not in KINDS:
            raise GdmError(f"--kind {kind} is not a kind of dataset: choose cyclegan or pix2pix.")
        return kind
    return "pix2pix" if name in PAIRED_DATASETS else "cyclegan"


def download_command(name: str, data_dir: str | Path = "data", kind: str | None = None) -> str:
    """The shell command that puts dataset `name` into `data_dir/name`."""
    flag = " --kind cyclegan" if kind == "cyclegan" and name in PAIRED_DATASETS else ""
    return f"python -m gdm.data.download {name}{flag} --data-dir {shlex.quote(str(data_dir))}"


def dataset_url(name: str, url_base: str | None = None, kind: str | None = None) -> str:
    if dataset_kind(name, kind) == "pix2pix":
        base = url_base or os.environ.get(PAIRED_URL_ENV) or PAIRED_URL_BASE
        return f"{base.rstrip('/')}/{name}.tar.gz"
    base = url_base or os.environ.get(URL_ENV) or URL_BASE
    return f"{base.rstrip('/')}/{name}.zip"


def has_images(folder: Path) -> bool:
    return bool(image_paths(folder))


def missing_folders(root: Path, kind: str = "cyclegan") -> list[str]:
    """The sub-folders of `root` that are absent or hold no image (pix2pix: train/, and val/ or test/)."""
    if kind == "pix2pix":
        missing = [] if has_images(root / "train") else ["train"]
        if not (has_images(root / "val") or has_images(root / "test")):
            missing.append("val (or test)")
        return missing
    return [f for f in FOLDERS if not has_images(root / f)]


def extract(source: Path, dest: Path, what) -> None:
    """Unpack a zip or a tar archive (by its content, not its name) into `dest`, nothing outside it."""
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                archive.extractall(dest)  # zipfile drops absolute paths and `..` parts
        else:
            with tarfile.open(source) as archive:
                archive.extractall(dest, filter="data")  # refuses absolute paths, `..` and links out of dest
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError) as err:
        raise GdmError(f"{what} is not a readable zip or tar.gz file ({err}): download it again.") from None


def fetch(url: str, dest: Path, name: str, data_dir: Path) -> None:
    """Stream `url` into `dest`, printing progress about every 10%."""
    offline = (f"check the network, or download it elsewhere and run "
               f"`python -m gdm.data.download {name} --archive FILE --data-dir {shlex.quote(str(data_dir))}` "
               f"(or unpack it into {data_dir / name})")
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


def dataset_root(extracted: Path, name: str, kind: str = "cyclegan") -> Path:
    """Where the sub-folders are in an extracted archive: `<name>/` as in the official ones, else a
    single top folder (a renamed archive) or the top level itself."""
    tops = [p for p in extracted.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    for root in (extracted / name, *(tops if len(tops) == 1 else ()), extracted):
        if not missing_folders(root, kind):
            return root
    return extracted / name


def download(name: str, data_dir: str | Path = "data", url_base: str | None = None,
             archive_path: str | Path | None = None, force: bool = False, kind: str | None = None) -> Path:
    """Put dataset `name` into `data_dir/name` from the server (or from the local archive `archive_path`)."""
    kind = dataset_kind(name, kind)
    names = PAIRED_DATASETS if kind == "pix2pix" else DATASETS
    if name not in names:
        raise GdmError(f"{name!r} is not a CycleGAN or pix2pix dataset: choose one of "
                       f"{', '.join(DATASETS)} (CycleGAN) or {', '.join(PAIRED_DATASETS)} (pix2pix).")
    data_dir = Path(data_dir).expanduser()
    target = data_dir / name
    layout = "train/, val/ or test/" if kind == "pix2pix" else "trainA/, trainB/, testA/, testB/"
    if target.exists():
        missing = missing_folders(target, kind)
        if not missing and not force:
            print(f"{target} is already complete ({layout}): nothing to do (--force replaces it).")
            return target
        if missing and not force:  # someone's partial copy: replace it only when asked to
            raise GdmError(f"{target} exists but has no images in {', '.join(m + '/' for m in missing)}: "
                           "remove it, or pass --force to replace it.")
    suffix = ".tar.gz" if kind == "pix2pix" else ".zip"
    source = Path(archive_path).expanduser() if archive_path is not None else None
    if source is not None and not source.is_file():
        raise GdmError(f"--archive {source} is not a file: point it at a downloaded {name}{suffix}.")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Inside data_dir, so the final rename stays on one file system; removed on any failure or Ctrl-C.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=data_dir) as tmp:
        tmp = Path(tmp)
        what = source
        if source is None:
            what, source = dataset_url(name, url_base, kind), tmp / f"{name}{suffix}"
            fetch(what, source, name, data_dir)
        extract(source, tmp / "extracted", what)
        root = dataset_root(tmp / "extracted", name, kind)
        missing = missing_folders(root, kind)
        if missing:
            raise GdmError(f"{what} has no images in {', '.join(name + '/' + m + '/' for m in missing)}: "
                           f"it is not the {name} dataset; download it again.")
        if target.exists():
            shutil.rmtree(target)  # --force
        root.rename(target)
    folders = sorted(p.name for p in target.iterdir() if p.is_dir())
    counts = ", ".join(f"{f} {sum(1 for p in (target / f).rglob('*') if p.is_file())}" for f in folders)
    if kind == "pix2pix":
        train = f"python run.py model=pix2pix data=paired data.root={shlex.quote(str(target))} data.name={name}"
    else:
        train = (f"python run.py model=cyclegan data=unpaired data.root={shlex.quote(str(target))} "
                 f"data.name={name}")
    print(f"{name} is in {target} ({counts} files). Train on it: {train}  (data={name} etc. for the sets with a "
          "config)", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdm.data.download",
        description="Download a standard CycleGAN (unpaired) or pix2pix (paired) dataset into DATA_DIR/NAME.")
    parser.add_argument("name", metavar="NAME", help=f"CycleGAN: {', '.join(DATASETS)}; "
                                                     f"pix2pix: {', '.join(PAIRED_DATASETS)}")
    parser.add_argument("--data-dir", default="data", help="where datasets live (paths.data_dir; default: data)")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="cyclegan or pix2pix (default: pix2pix for the pix2pix names, else cyclegan)")
    parser.add_argument("--url-base", default=None,
                        help=f"server folder holding NAME.zip / NAME.tar.gz (default: ${URL_ENV} or {URL_BASE}; "
                             f"pix2pix: ${PAIRED_URL_ENV} or {PAIRED_URL_BASE})")
    parser.add_argument("--archive", "--zip", dest="archive", default=None, metavar="FILE",
                        help="install from this downloaded zip or tar.gz instead")
    parser.add_argument("--force", action="store_true", help="replace an existing DATA_DIR/NAME")
    args = parser.parse_args(argv)
    try:
        download(args.name, args.data_dir, args.url_base, args.archive, args.force, args.kind)
    except GdmError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
