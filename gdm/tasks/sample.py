"""`task=sample`: draw images from a trained generative model.

    python run.py task=sample ckpt_path=RUN/checkpoints/best.ckpt +sample.n=64

Writes `samples/00000.png ...` (one PNG per sample; names of 5 digits, more when `sample.n` > 100000, so they
sort in order) and `grid.png` of the first samples (at most GRID_MAX) in the run directory. Sample i is number
i of the model's seeded sample sequence (`sample.seed`), so the same command gives the same images. The samples
are written as they are drawn, 256 at a time: memory stays flat whatever `sample.n` (50,000 for an external FID
tool). A conditional model draws its labels as task=eval does (from the training split's class or cluster
frequencies, each sample's label seeded by its index), so an external FID of these images measures what gdm's
FID measures with the same seed (`metrics.fid.seed`); `labels.csv` lists each file's label and the log says
which distribution was drawn (`+sample.label=3`: one class only). A GAN trained with an EMA generator samples
from the EMA copy. Model settings typed on the command line that differ from the checkpoint's are refused: the
model is the checkpoint's, as trained; `sample.sampler` / `sample.steps` draw with another sampler or number of
steps (a diffusion or flow model; null: the checkpoint's own), and the log names the sampler and NFE that ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gdm.checkpoints import check_typed_settings, load_model, read_checkpoint
from gdm.errors import GdmError
from gdm.evaluation.context import sampling_words
from gdm.images import grid_uint8, save_png, to_uint8
from gdm.metrics.sample_quality import sampled_labels
from gdm.models.base import Samples
from gdm.tasks.options import check_steps_apply, options_of, read_options, sample_options

log = logging.getLogger(__name__)

GRID_MAX = 256  # samples in grid.png at most: all 50,000 samples of 64 px would be a 14,800 px square PNG


def sample_file_name(i: int, n: int) -> str:
    """Sample i of n: zero-padded to 5 digits, or as many as n - 1 has, so that the names sort in sample order."""
    return f"{i:0{max(5, len(str(n - 1)))}d}.png"


def sample(cfg: DictConfig) -> None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=sample needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.get("sample") or {}
    n, seed, label, sampler, steps, guidance = read_options(sample_options, "sample", opts).values()
    check_typed_settings(cfg, read_checkpoint(cfg.ckpt_path), cfg.ckpt_path, "sample")
    model = load_model(cfg.ckpt_path, autoencoder=OmegaConf.select(cfg, "model.autoencoder"))
    if not isinstance(model, Samples):
        raise GdmError(f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which translates images rather "
                       "than drawing them: use task=translate.")
    if sampler is not None or steps is not None or guidance is not None:
        with options_of("sample", opts):
            model.set_sampling(sampler=sampler, steps=steps, guidance=guidance)
        check_steps_apply(model, "sample.steps", steps)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    conditional = model.conditional
    classes = len(model.class_probs) if conditional else 0
    if label is not None and not (conditional and label < classes):
        raise GdmError(f"sample.label={label} needs a class-conditional model with that class "
                       f"({'classes 0..' + str(classes - 1) if conditional else 'this one is unconditional'}).")
    out = Path(cfg.paths.output_dir)
    nrow = max(1, round(min(n, GRID_MAX) ** 0.5))
    shown = min(n, max(nrow, GRID_MAX // nrow * nrow))  # whole rows
    grid, rows = [], []
    for indices in torch.arange(n).split(256):
        labels = None
        if label is not None:
            labels = torch.full_like(indices, label)
        elif conditional:  # as the evaluation draws them (gdm.models.base.latent_labels)
            labels = model.sample_labels(indices, seed)
        images = model.generate(indices, seed=seed, labels=labels).cpu()
        for i, image in zip(indices.tolist(), to_uint8(images)):
            save_png(image, out / "samples" / sample_file_name(i, n))
        if labels is not None:
            rows += [f"{sample_file_name(i, n)},{int(c)}" for i, c in zip(indices.tolist(), labels.tolist())]
        grid.append(images[:max(0, shown - int(indices[0]))])
    save_png(grid_uint8(torch.cat(grid), nrow=nrow), out / "grid.png")
    if rows:
        (out / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    ema = " (its EMA generator)" if getattr(model, "generator_ema", None) is not None else ""
    drawn = ""
    if conditional:
        drawn = f"; labels: class {label} only" if label is not None else (
            f"; labels drawn from the {sampled_labels(model)}, seeded per sample index as task=eval does")
        drawn += f" ({(out / 'labels.csv').resolve()})"
    log.info(f"{n} samples of {type(model).__name__}{ema} in {(out / 'samples').resolve()}{drawn}; grid: "
             f"{(out / 'grid.png').resolve()}; sampling: {sampling_words(model.sampling_protocol())}")

