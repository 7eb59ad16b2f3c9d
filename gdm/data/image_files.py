"""The one way gdm reads image files a user points it at: which files are images, how one is decoded into
8-bit pixels, and how a folder is verified before a run. Image folders, the unpaired CycleGAN folders,
`task=translate` and the download tool's checks all use it.

- Which files: `IMAGE_EXTENSIONS`, anywhere under the root, except hidden files and folders (a name
  starting with "." such as `.ipynb_checkpoints/`, and macOS's `__MACOSX/`): they are not data. Linked
  folders are followed, each real folder read once (a link back to a folder already read, `self -> .`, would
  otherwise repeat its images, or loop for ever), with a warning naming the links left out.
- Decoding (`open_image`): the EXIF orientation is applied (phone photos come upright everywhere);
  16-bit greyscale (PNG / TIFF, modes I;16 and I) is scaled to 8 bits by value / 257, and 32-bit float
  images are read as [0, 1] (refused, by name, outside it), where Pillow's own conversion would clip
  them to white; 16-bit colour PNGs keep their high byte (Pillow); transparent pixels (RGBA, LA, a
  palette with transparency) are composited over `background` (an RGB colour, default white) instead of
  turning black; CMYK / YCbCr / 1-bit images are converted. The result is mode "L" (channels=1, ITU-R
  601 luminance) or "RGB" (channels=3). Any decoding problem (truncated, not an image, unsupported)
  raises `UnreadableImage`, one sentence naming the file.
- Verifying (`verify_images`): every file is fully decoded once, in parallel threads (Pillow's decoders
  release the GIL), and the files that decoded are remembered in an index keyed by path, size and
  modification time (`<cache dir>/verified_images/`), so an unchanged folder is not decoded again on
  the next run, sweep job or DDP process.

This module imports no torch, so the download command starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gdm.errors import GdmError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
HIDDEN_FOLDERS = ("__MACOSX",)
WHITE = (255, 255, 255)

log = logging.getLogger(__name__)


class UnreadableImage(GdmError):
    """An image file that cannot be decoded."""


def hidden(name: str) -> bool:
    return name.startswith(".") or name in HIDDEN_FOLDERS


def image_paths(root: str | Path) -> list[Path]:
    """The image files under `root` (searched recursively, following links, each real folder once; hidden files
    and folders left out), sorted; [] when none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found, read, repeats = [], set(), []
    for folder, subfolders, names in os.walk(root, followlinks=True):  # scandir: no stat per file
        real = os.path.realpath(folder)
        if real in read:  # a link to a folder already read: its images once only, and no endless loop
            subfolders[:] = []
            repeats.append(f"{folder} -> {real}")
            continue
        read.add(real)
        subfolders[:] = sorted(d for d in subfolders if not hidden(d))  # the first path to a folder wins, always
        found += [os.path.join(folder, n) for n in names
                  if not hidden(n) and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    if repeats:
        more = f" and {len(repeats) - 1} more" if len(repeats) > 1 else ""
        log.warning(f"{root}: linked folders lead to folders already read ({repeats[0]}{more}); their images are "
                    "read once.")
    return sorted(map(Path, found))


def find_images(root: str | Path, key: str = "root") -> list[Path]:
    """`image_paths(root)`, or one sentence naming `key` when the folder is missing or holds no image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise GdmError(f"{key}={root} is not a folder: point {key} at a folder of images.")
    files = image_paths(root)
    if not files:
        raise GdmError(f"{key}={root} contains no images ({', '.join(IMAGE_EXTENSIONS)}; hidden files and folders "
                       "are skipped): add images or fix the path.")
    return files


def to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """High bit-depth single-channel modes to mode L, scaled rather than clipped."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise UnreadableImage(f"Image {path} holds integers in [{values.min():g}, {values.max():g}], outside the "
                                  "16-bit range gdm scales to 8 bits: convert it to an 8- or 16-bit image.")
        return Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise UnreadableImage(f"Image {path} is a float image with values in [{np.nanmin(values):g}, "
                                  f"{np.nanmax(values):g}]: gdm reads float images as [0, 1]; rescale or convert it.")
        return Image.fromarray(np.round(values * 255).astype(np.uint8), mode="L")
    return image


def flatten(image: Image.Image, channels: int, background: Sequence[int]) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB", transparent pixels composited over `background`."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (*map(int, background), 255))
        image = Image.alpha_composite(canvas, image)
    return image.convert("L" if channels == 1 else "RGB")


def open_image(path: str | Path, channels: int = 3, background: Sequence[int] = WHITE) -> Image.Image:
    """The decoded, upright, 8-bit image at `path` in mode "L" (channels=1) or "RGB" (channels=3)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, naming itself
            image = ImageOps.exif_transpose(image)
            return flatten(to_8bit(image, path), channels, background)
    except UnreadableImage:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"Cannot read image {path} ({err}): remove or replace the file.") from None


def cache_dir() -> Path:
    """Where gdm keeps what it computed about the user's data (the evaluator's `cache_dir` by default)."""
    return Path(os.environ.get("GDM_CACHE_DIR", "~/.cache/gdm")).expanduser()


def index_path(root: Path) -> Path:
    return cache_dir() / "verified_images" / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]}.json"


def read_index(path: Path) -> dict[str, list[int]]:
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: verify again
        return {}


def write_index(path: Path, files: dict[str, list[int]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"version": 1, "files": files}))
        tmp.replace(path)
    except OSError:  # a read-only cache costs start-up time, not the run
        pass


def check_decodes(path: Path) -> str | None:
    """None if the file decodes, else why not."""
    try:
        open_image(path)
    except UnreadableImage as err:
        return str(err)
    return None


def verify_images(files: Sequence[Path], root: str | Path | None = None, workers: int | None = None) -> None:
    """Decode every file not verified before (by path, size, modification time); one sentence naming the
    first unreadable file (a broken link, a file that does not decode) and the next ones, if any fails."""
    root = Path(root).expanduser() if root is not None else Path(os.path.commonpath([str(f) for f in files]))
    index_file = index_path(root)
    known = read_index(index_file)
    stamps, problems = {}, {}
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as err:  # a link to nothing, a file removed since the folder was listed
            target = f": a link to {os.readlink(path)}" if os.path.islink(path) else ""
            problems[os.path.abspath(path)] = (f"Cannot read image {path} ({err.strerror}{target}): "
                                               "remove or replace the file.")
            continue
        stamps[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns]
    todo = [Path(name) for name, stamp in stamps.items() if known.get(name) != stamp]
    if todo:
        with ThreadPoolExecutor(max_workers=workers or min(32, (os.cpu_count() or 1) + 2)) as pool:
            problems.update({str(path): problem for path, problem in zip(todo, pool.map(check_decodes, todo))
                             if problem is not None})
        write_index(index_file, {**known, **{name: stamp for name, stamp in stamps.items() if name not in problems}})
    if problems:
        first, *others = sorted(problems)
        shown = ", ".join(others[:10]) + (", ..." if len(others) > 10 else "")
        more = f" (and {len(others)} more unreadable files: {shown})" if others else ""
        raise UnreadableImage(problems[first].rstrip(".") + more + ".")
