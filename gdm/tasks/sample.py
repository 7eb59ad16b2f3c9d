"""`task=sample`: draw images from a trained generative model.

    python run.py task=sample ckpt_path=RUN/checkpoints/best.ckpt +sample.n=64

Writes `samples/00000.png ...` (one PNG per sample; names of 5 digits, more when `sample.n` > 100000, so they
sort in order) and `grid.png` of the first samples (at most GRID_MAX) in the run directory. Sample i is number
i of the model's seeded sample sequence (`sample.seed`), so the same command gives the same images. The samples
are written as they are drawn, 256 at a time: memory stays flat whatever `sample.n` (50,000 for an external FID
tool). A class-conditional model draws class i mod C for sample i, so the grid's column c shows class c (or
`+sample.label=3` for one class only); a GAN trained with an EMA generator samples from the EMA copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from gdm.checkpoints import load_model
from gdm.errors import GdmError
from gdm.images import grid_uint8, save_png, to_uint8
from gdm.models.capabilities import Samples
from gdm.tasks.options import read_options, sample_options

log = logging.getLogger(__name__)

GRID_MAX = 256  # samples in grid.png at most: all 50,000 samples of 64 px would be a 14,800 px square PNG


def sample_file_name(i: int, n: int) -> str:
    """Sample i of n: zero-padded to 5 digits, or as many as n - 1 has, so that the names sort in sample order."""
    return f"{i:0{max(5, len(str(n - 1)))}d}.png"


def sample(cfg: DictConfig) -> None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=sample needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.get("sample") or {}
    n, seed, label = read_options(sample_options, "sample", opts).values()
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
    nrow = classes if conditional and label is None else max(1, round(min(n, GRID_MAX) ** 0.5))
    shown = min(n, max(nrow, GRID_MAX // nrow * nrow))  # whole rows (conditional: a class per column)
    grid = []
    for indices in torch.arange(n).split(256):
        if conditional:
            labels = torch.full_like(indices, label) if label is not None else indices % classes
            images = model.generate(indices, seed=seed, labels=labels).cpu()
        else:
            images = model.generate(indices, seed=seed).cpu()
        for i, image in zip(indices.tolist(), to_uint8(images)):
            save_png(image, out / "samples" / sample_file_name(i, n))
        grid.append(images[:max(0, shown - int(indices[0]))])
    save_png(grid_uint8(torch.cat(grid), nrow=nrow), out / "grid.png")
    ema = " (its EMA generator)" if getattr(model, "generator_ema", None) is not None else ""
    log.info(f"{n} samples of {type(model).__name__}{ema} in {(out / 'samples').resolve()}; grid: "
             f"{(out / 'grid.png').resolve()}")
