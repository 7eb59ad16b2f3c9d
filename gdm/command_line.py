"""The command line as run.py hands it to Hydra (light: no torch, imported before Hydra composes).

An option renamed since (`gdm.config_upgrades.RENAMED`) gets one sentence saying what to type instead, before
Hydra would answer "not in struct". A checkpoint's task (`task=eval` / `sample` / `translate` with `ckpt_path=`)
takes its model from the checkpoint, while Hydra composes the default model group (the GAN), whose keys are not
every model's: a typed `model.KEY=VALUE` that only the checkpoint's model has would stop at Hydra's "Key 'KEY' is not
in struct". Unless a model group is named (`model=diffusion`), such overrides pass on as `++model.KEY=VALUE`; gdm
then checks each against the checkpoint's model (one sentence for a key it does not have, or for a setting its
weights were trained for). A `~model.KEY` there is refused in one sentence: the checkpoint's model keeps every
option it was trained with.
"""

from __future__ import annotations

from gdm.config_upgrades import RENAMED

CHECKPOINT_TASKS = ("eval", "sample", "translate")


def renamed_option(overrides: list[str]) -> str | None:
    """One sentence for the first command-line override (`key=value`, `+key=value`) that names a renamed option,
    else None."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in RENAMED:
            return f"{key}={value} is an option of older gdm: set {RENAMED[key]}."
    return None


def checkpoint_task_deletion(args: list[str]) -> str | None:
    """One sentence for a `~model.KEY` on a checkpoint's task that names no model group (Hydra would delete it from
    the default GAN group, not from the checkpoint's model, or answer "does not exist"), else None."""
    if checkpoint_task(args) is None:
        return None
    for arg in args:
        if arg.startswith("~model.") or arg.partition("=")[0] == "~model":
            key, task = arg[1:].partition("=")[0], checkpoint_task(args)
            instead = (f"set {key}=VALUE to change a setting the checkpoint allows" if task == "eval" else
                       "sample.sampler / sample.steps / sample.guidance choose how it samples" if task == "sample"
                       else "translate.direction / translate.load_size choose how it translates")
            return (f"{arg} deletes an option, but task={task} takes the model from ckpt_path as it was trained, "
                    f"with every option it had: drop {arg} ({instead}).")
    return None


def checkpoint_task(args: list[str]) -> str | None:
    """The task when `args` run a checkpoint's task (`task=eval|sample|translate ckpt_path=...`) and name no model
    group, else None."""
    keys = {arg.lstrip("+~").partition("=")[0]: arg.partition("=")[2] for arg in args if "=" in arg}
    if keys.get("task") not in CHECKPOINT_TASKS or "ckpt_path" not in keys or "model" in keys:
        return None
    return keys["task"]


def checkpoint_task_overrides(args: list[str]) -> list[str]:
    """`args` (Hydra overrides, flags kept as they are) with each plain `model.KEY=VALUE` written
    `++model.KEY=VALUE` when they run a checkpoint's task and name no model group; else `args` unchanged."""
    if checkpoint_task(args) is None:
        return args
    return [f"++{arg}" if arg.startswith("model.") and "=" in arg else arg for arg in args]
