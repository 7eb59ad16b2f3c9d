"""`task=translate`: translate a folder of images with a trained CycleGAN or pix2pix checkpoint.

    python run.py task=translate ckpt_path=RUN/checkpoints/best.ckpt \
        translate.input=photos/ translate.output=as_monet/ translate.direction=BtoA

Writes one image per input image under `translate.output`, with the same relative path and file name
(and so the same format). Inputs are read as training reads them (`gdm.data.image_files.open_image`:
upright by EXIF, 16-bit scaled to 8, transparency over the training data's background); every input is
decoded before anything is written, and each output is written whole and then renamed. Resolution: by default
each image is translated at its own size (the generator is fully convolutional; sides are reflection-padded to
a multiple of the generator's `size_multiple`, 4 for the ResNet generator, 2**num_downs for a U-Net, and the
result cropped back), so the output has the input's size. `translate.direction` defaults to the model's first
direction (AtoB for a CycleGAN, the trained one for pix2pix). `translate.load_size=N` first resizes each image so its
short side is N (e.g. the training `data.image_size`, the scale the generator learned), and the output has
that size. An input whose translation cannot fit in the memory available (an uncropped 50-megapixel photo, a
huge `load_size`) is refused before anything is written, naming the image and the memory it needs
(`gdm.memory`: its activations measured on a small image and scaled to its pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from gdm.checkpoints import check_typed_settings, load_model, read_checkpoint
from gdm.data.image_files import WHITE, find_images, open_image, verify_images
from gdm.errors import GdmError
from gdm.images import to_uint8
from gdm.memory import available_bytes, gib, scaled_peak_bytes
from gdm.models.base import DIRECTIONS, Translates
from gdm.tasks.options import read_options, translate_options

log = logging.getLogger(__name__)


def translate_image(model, image: Image.Image, direction: str, load_size: int | None) -> Image.Image:
    """A decoded image (`open_image`: upright, 8-bit, mode L or RGB as the model's channels) -> its translation."""
    if load_size:
        image = v2.Resize(load_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(image)
    x = pil_to_tensor(image).float().unsqueeze(0) / 127.5 - 1
    h, w = x.shape[-2:]
    if min(h, w) < 8:  # the residual blocks' reflection padding needs 2 px at 1/4 scale
        raise GdmError(f"an image of {w}x{h} px is too small to translate (at least 8x8): drop it or set "
                       "translate.load_size.")
    multiple = model.size_multiple  # the generator's stride-2 stages
    pad_h, pad_w = -h % multiple, -w % multiple
    # Reflection needs pads smaller than the image (a U-Net's 256 px multiple may not be): else edge pixels.
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < h and pad_w < w else "replicate")
    y = to_uint8(model.translate(x, direction)[..., :h, :w])[0].cpu()
    return Image.fromarray(y.permute(1, 2, 0).squeeze(-1).numpy())


def translated_size(path: Path, load_size: int | None) -> tuple[int, int]:
    """(width, height) in pixels at which the image at `path` is translated: its own, or its short side resized to
    `load_size` as torchvision's Resize does. Read from the file's header, without decoding."""
    with Image.open(path) as image:
        w, h = image.size
    if load_size:
        short, long = sorted((w, h))
        w, h = (load_size, int(load_size * long / short)) if w <= h else (int(load_size * long / short), load_size)
    return w, h


def check_memory(model, files: list[Path], direction: str, load_size: int | None) -> None:
    """Raise GdmError, before anything is written, if the largest input's translation needs more memory than the
    model's device has available; log a warning if it needs more than half of it (the activations are a lower
    bound: a pass takes more, experiments/translate_memory.md)."""
    multiple, channels = model.size_multiple, model.hparams.image_shape[0]
    side = multiple * -(-64 // multiple)  # small probes, multiples of the generator's size_multiple
    mode = "L" if channels == 1 else "RGB"
    tensor_bytes = scaled_peak_bytes(
        lambda s: translate_image(model, Image.new(mode, (s, s)), direction, None), side)
    sizes = {path: translated_size(path, load_size) for path in files}
    path, (w, h) = max(sizes.items(), key=lambda item: item[1][0] * item[1][1])
    with Image.open(path) as image:  # the decoded image (and its resized copy) besides the tensors
        decoded = channels * (image.size[0] * image.size[1] + (w * h if load_size else 0))
    need = tensor_bytes(w + -w % multiple, h + -h % multiple) + decoded
    device = next(model.parameters()).device
    available = available_bytes(device)
    at = f"{w}x{h} px" + (f" (translate.load_size={load_size})" if load_size else "")
    trained = model.hparams.image_shape[-1]
    if need > available:
        raise GdmError(f"{path} would be translated at {at}, which needs at least {gib(need)} of memory, more than "
                       f"the {gib(available)} available on the {device.type}: set translate.load_size to a smaller "
                       f"short side in pixels (the model was trained at {trained}) or free memory.")
    if 2 * need > available:
        log.warning(f"{path} is translated at {at}, which needs at least {gib(need)} of memory and may need up to "
                    f"twice that; {gib(available)} are available on the {device.type}: if the run is killed, set "
                    f"translate.load_size (the model was trained at {trained}).")


def translate(cfg: DictConfig) -> None:
    opts = cfg.translate
    if not cfg.get("ckpt_path"):
        raise GdmError("task=translate needs ckpt_path=RUN/checkpoints/best.ckpt (a CycleGAN or pix2pix checkpoint).")
    for key in ("input", "output"):
        if not opts.get(key):
            raise GdmError(f"translate.{key} is not set: "
                           "task=translate needs translate.input=DIR translate.output=DIR.")
    load_size = read_options(translate_options, "translate", opts)["load_size"]
    if opts.direction is not None and opts.direction not in DIRECTIONS:
        raise GdmError(f"translate.direction={opts.direction} is not a direction; choose AtoB or BtoA.")
    check_typed_settings(cfg, read_checkpoint(cfg.ckpt_path), cfg.ckpt_path, "translate",
                         hint=" (translate.direction picks a CycleGAN's direction, translate.load_size the "
                              "size)")
    # Built on the CPU and then moved: map_location alone would leave the model's weights on the CPU.
    model = load_model(cfg.ckpt_path).to("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(model, Translates):
        raise GdmError(f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, not a translation model: "
                       "task=translate needs a model=cyclegan or model=pix2pix checkpoint.")
    direction = opts.direction or next(iter(model.directions))
    if direction not in model.directions:
        raise GdmError(f"translate.direction={direction}, but ckpt_path={cfg.ckpt_path} translates "
                       f"{', '.join(model.directions)} only: set translate.direction to that.")
    source, output = Path(opts.input).expanduser(), Path(opts.output).expanduser()
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise GdmError(f"translate.output={output} is inside translate.input={source}: the translations would "
                       "overwrite or mix with the inputs; pick another folder.")
    files = find_images(source, key="translate.input")
    verify_images(files, root=source)  # every input decodes before any output is written
    check_memory(model, files, direction, load_size)
    channels = model.hparams.image_shape[0]
    background = read_checkpoint(cfg.ckpt_path)["gdm_config"]["data"].get("background", WHITE)
    for done, path in enumerate(files):
        out = output / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = translate_image(model, open_image(path, channels, background), direction, load_size)
        except GdmError as err:  # a file that changed since it was verified, an image too small
            raise GdmError(f"{str(err).rstrip('.')}; translated {done} of {len(files)} images into {output} (in "
                           "sorted order); the rest were not written.") from None
        tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed: never a half-written output
        result.save(tmp, format=Image.registered_extensions()[out.suffix.lower()],
                    **({"quality": 95} if out.suffix.lower() in (".jpg", ".jpeg") else {}))
        tmp.replace(out)
    log.info(f"translated {len(files)} images {direction}: {source} -> {output.resolve()}")
