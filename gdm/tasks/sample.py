"""`task=sample`: draw images from a trained generative model.

    python run.py task=sample ckpt_path=RUN/checkpoints/best.ckpt +sample.n=64

Writes `samples/00000.png ...` (one PNG per sample) and `grid.png` in the run directory. Sample i is
number i of the model's seeded sample sequence (`sample.seed`), so the same command gives the same images.
A class-conditional model draws class i mod C for sample i, so the grid's column c shows class c (or
`+sample.label=3` for one class only); a GAN trained with an EMA generator samples from the EMA copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from gdm.checkpoints import load_model
from gdm.errors import GdmError, integer_option
from gdm.images import grid_uint8, save_png, to_uint8
from gdm.models.capabilities import Samples

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=sample needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.get("sample") or {}
    n = integer_option("sample.n", opts.get("n", 64), minimum=1, hint="(the number of images to draw)")
    seed = integer_option("sample.seed", opts.get("seed", 0), minimum=0, hint="(the seed of the sample sequence)")
    label = integer_option("sample.label", opts.get("label"), minimum=0, optional=True,
                           hint="(the class to draw; unset: every class)")
    model = load_model(cfg.ckpt_path)
    if not isinstance(model, Samples):
        raise GdmError(f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which translates images rather "
                       "than drawing them: use task=translate.")
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    conditional = model.conditional
    classes = len(model.class_probs) if conditional else 0
    if label is not None and not (conditional and label < classes):
        raise GdmError(f"sample.label={label} needs a class-conditional model with that class "
                       f"({'classes 0..' + str(classes - 1) if conditional else 'this one is unconditional'}).")
    out = Path(cfg.paths.output_dir)
    images = []
    for indices in torch.arange(n).split(256):
        if conditional:
            labels = torch.full_like(indices, label) if label is not None else indices % classes
            images.append(model.generate(indices, seed=seed, labels=labels).cpu())
        else:
            images.append(model.generate(indices, seed=seed).cpu())
    images = torch.cat(images)
    for i, image in enumerate(to_uint8(images)):
        save_png(image, out / "samples" / f"{i:05d}.png")
    nrow = classes if conditional and label is None else max(1, round(n**0.5))
    save_png(grid_uint8(images, nrow=nrow), out / "grid.png")
    ema = " (its EMA generator)" if getattr(model, "generator_ema", None) is not None else ""
    log.info(f"{n} samples of {type(model).__name__}{ema} in {(out / 'samples').resolve()}; grid: "
             f"{(out / 'grid.png').resolve()}")
