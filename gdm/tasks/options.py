"""Options checked at the edge: a wrong value in config node P becomes one sentence naming `P.key=value`.

The constructors a config builds declare their options' types and bounds in their signatures
(`gdm.option_types`) and raise pydantic's ValidationError naming the parameter; their cross-field rules raise
GdmError whose text names parameters (`conditional=true and clusters=8 exclude each other`). `options_of(P)`
around the build of node P turns either into the sentence the user reads, with the config path added: the
only place that maps parameters to config keys.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Literal

import annotated_types as at
from hydra.errors import InstantiationException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import Field, Strict, ValidationError
from pydantic.fields import FieldInfo

from gdm.errors import GdmError, shown
from gdm.option_types import Count, Flag, NLLTolerance, NonNegativeInt, Seed, checked

BOUNDS = ((at.Ge, "ge", ">="), (at.Gt, "gt", ">"), (at.Le, "le", "<="), (at.Lt, "lt", "<"))
INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


@contextmanager
def options_of(path: str, node: DictConfig | None, *beside: tuple[str, DictConfig]) -> Iterator[None]:
    """Build config node `path` (`node`, its config) inside this block: a ValidationError or a GdmError naming
    its parameters, raised directly or wrapped by Hydra, becomes a GdmError naming the config keys. `beside`:
    (path, node) pairs whose keys a GdmError may name too (the model's nets are sized by the data's
    `image_size`)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - anything else is re-raised as it was
        mistake = option_error(err, path, node, beside)
        if mistake is None:
            raise
        raise mistake from None


def option_error(err: BaseException, path: str, node: DictConfig | None,
                 beside: tuple[tuple[str, DictConfig], ...] = ()) -> GdmError | None:
    """The user-facing sentence for `err` (or an exception it wraps) raised while building `node` at `path`;
    None when it is no option mistake."""
    while err is not None:
        if isinstance(err, ValidationError):
            return GdmError(validation_sentence(err, path, node))
        if isinstance(err, GdmError):
            return type(err)(with_config_paths(str(err), path, node, beside)) if node is not None else err
        err = err.__cause__ or (err.__context__ if isinstance(err, InstantiationException) else None)
    return None


def key_of(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def targets(path: str, node) -> Iterator[tuple[str, DictConfig]]:
    """Every config node under `node` (itself first) that names a `_target_`, with its path."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key, value in OmegaConf.to_container(node, resolve=False).items():  # unresolved: `???` stays
            if isinstance(value, dict):
                yield from targets(key_of(path, str(key)), node[key])


def typed_key(path: str, node: DictConfig, name: str) -> str:
    """The key the user typed for `name` of `node`: the source of a plain `${...}` interpolation, as the
    evaluator's `batch_size: ${metrics.batch_size}`."""
    raw = OmegaConf.to_container(node, resolve=False).get(name)
    match = INTERPOLATION.match(raw) if isinstance(raw, str) else None
    return match.group(1) if match else key_of(path, name)


def wrapped_function(err: ValidationError, path: str, node: DictConfig | None):
    """The function `err` was raised for (its title is the function's qualified name), with the config path
    of the node that builds it: a `_target_` under `node` (e.g. a net factory), or else a function reached
    from the frames the error passed through (e.g. an augmentation a model builds), at `path` itself."""
    for sub_path, sub in targets(path, node):
        function = get_object(sub._target_)
        for owner in function.__mro__ if inspect.isclass(function) else (function,):
            candidate = owner.__dict__.get("__init__") if inspect.isclass(owner) else owner
            if candidate is not None and candidate.__qualname__ == err.title:
                return candidate, sub_path, sub
    tb, frames = err.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    head, *rest = err.title.split(".")
    for frame in reversed(frames):  # innermost first; a function-level import is a local of its frame
        found = frame.f_locals.get(head, frame.f_globals.get(head))
        if found is None:
            continue
        for part in rest:
            found = getattr(found, part, None)
        if callable(found):
            return found, path, node
    return None, path, node


def parameter(function, index: str | int) -> inspect.Parameter | None:
    if function is None:
        return None
    params = list(inspect.signature(inspect.unwrap(function)).parameters.values())
    if isinstance(index, int):
        return params[index] if index < len(params) else None
    return next((p for p in params if p.name == index), None)


def annotation_of(function, name: str):
    hints = typing.get_type_hints(inspect.unwrap(function), include_extras=True)
    return hints.get(name)


def split_annotated(annotation) -> tuple[object, list]:
    metadata = []
    while typing.get_origin(annotation) is Annotated:
        metadata = [*annotation.__metadata__, *metadata]
        annotation = annotation.__origin__
    return annotation, metadata


def description_of(annotation) -> str:
    _, metadata = split_annotated(annotation)
    described = [m.description for m in metadata if isinstance(m, FieldInfo) and m.description]
    return described[-1] if described else ""


def bounds_of(metadata: list) -> str:
    found = {}
    for item in metadata:
        for bound in [item, *(item.metadata if isinstance(item, FieldInfo) else [])]:
            for kind, attr, sign in BOUNDS:
                if isinstance(bound, kind):
                    found[sign] = getattr(bound, attr)
    return " and ".join(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}"
                        for sign, value in found.items())


def phrase(annotation, inherited: tuple = ()) -> str:
    """What a value of `annotation` must be, in words: 'an integer >= 1', 'one of a, b', 'true or false'.
    `inherited`: bounds declared around a union, which apply to its members."""
    base, metadata = split_annotated(annotation)
    metadata = [*inherited, *metadata]
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (typing.Union, types.UnionType):
        members = [phrase(a, tuple(metadata)) for a in args if a is not type(None)]
        return " or ".join(members) + (" or null" if type(None) in args else "")
    if origin is Literal:
        names = [shown(a) if not isinstance(a, str) else a for a in args]
        return names[0] if len(names) == 1 else "one of " + ", ".join(names)
    if origin is tuple and args and args[-1] is not Ellipsis:
        each = {phrase(a) for a in args}
        if len(each) == 1:
            return f"a list of {len(args)} values, each {each.pop()}"
        return f"a list of {len(args)} values ({'; '.join(phrase(a) for a in args)})"
    if origin in (tuple, list, Sequence, typing.Sequence) and args:
        return f"a list of values, each {phrase(args[0])}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base)
    words = words or getattr(base, "__name__", str(base))
    bounds = bounds_of(metadata)
    return f"{words} {bounds}" if bounds and base is not bool else words


def element(annotation, indices: list[int]):
    """The annotation of `value[i][j]...` for a value of `annotation`."""
    for index in indices:
        base, _ = split_annotated(annotation)
        args = [a for a in typing.get_args(base) if a is not type(None)]
        if typing.get_origin(base) in (typing.Union, types.UnionType) and len(args) == 1:  # X | None: X
            base, _ = split_annotated(args[0])
            args = list(typing.get_args(base))
        if not args:
            return annotation
        annotation = args[index] if typing.get_origin(base) is tuple and args[-1] is not Ellipsis else args[0]
    return annotation


def validation_sentence(err: ValidationError, path: str, node: DictConfig | None) -> str:
    """One sentence for the first invalid option of `err`: `key=value must be <range> (<description>).`"""
    first = err.errors()[0]
    function, path, node = wrapped_function(err, path, node)
    loc = list(first["loc"])
    param = parameter(function, loc[0])
    name = param.name if param is not None else str(loc[0])
    indices = []
    for part in loc[1:]:
        if not isinstance(part, int):
            break
        indices.append(part)
    value = first["input"]  # the whole option, or the element the error points at (model.betas[1]=1.5)
    in_config = isinstance(node, DictConfig) and name in node
    if in_config and indices and not isinstance(node[name], ListConfig):  # typed as one string: show it whole
        value, indices = node[name], []
    if indices and first["type"] == "missing":  # a list too short (betas=[0.5]): the list is what is wrong
        value, indices = (node[name] if in_config else value), []
    key = typed_key(path, node, name) if in_config else key_of(path, name)
    key += "".join(f"[{i}]" for i in indices)
    annotation = annotation_of(function, name) if function is not None else None
    if first["type"] == "unexpected_keyword_argument" and isinstance(node, DictConfig):
        known = [str(k) for k in node if not str(k).startswith("_") and k != name]  # the options the config has
        return (f"{key}={shown(value)} is not an option of {path or 'this config'}: remove it, or set one of "
                f"{', '.join(known)}.")
    if annotation is None or first["type"] == "unexpected_keyword_argument":
        detail = first["msg"][0].lower() + first["msg"][1:]
        return f"{key}={shown(value)} is not accepted: {detail}."
    wanted = element(annotation, indices)
    hint = description_of(wanted) or description_of(annotation)
    return f"{key}={shown(value)} must be {phrase(wanted)}{f' ({hint})' if hint else ''}."


def with_config_paths(message: str, path: str, node: DictConfig,
                      beside: tuple[tuple[str, DictConfig], ...] = ()) -> str:
    """`name=` for names that are options of `node` (or of one node under it, or else of a `beside` node)
    written as `path.name=`."""
    under: dict[str, list[str]] = {}
    for sub_path, sub in targets(path, node):
        for key in sub:
            under.setdefault(str(key), []).append(sub_path)
    # a name of one node under `node` (`n_layers`: model.discriminator), not of two (`norm`: left as it is)
    where = {key: paths[0] for key, paths in under.items() if len(paths) == 1}
    where.update({str(key): path for key in node})  # keys of `node` itself win over those of nodes under it
    for other_path, other in beside:  # only names `node` lacks
        for key in other:
            where.setdefault(str(key), other_path)
    names = sorted((re.escape(k) for k in where if not k.startswith("_")), key=len, reverse=True)
    if not names:
        return message
    # `root=/x` and `root/trainA=/x/trainA` (a folder under an option), never a word inside a path or a longer
    # name (`/tmp/pytest-of-root/x`, `data_root=`)
    pattern = re.compile(r"(?<![\w.\[/\-~:])(" + "|".join(names) + r")(?=[=/])")
    return pattern.sub(lambda m: key_of(where[m.group(1)], m.group(1)), message)


# The top-level keys gdm reads itself, and the trainer counts Lightning would assert on (a traceback) or take
# as given (a modulo by zero): checked by the same formatter, from signatures like every other option.
@checked
def run_options(seed: Annotated[Seed | None, Field(description="null: a random one, recorded")] = None,
                compile: Annotated[Flag, Field(description="torch.compile the nets")] = False,  # noqa: A002
                test_after_fit: Annotated[Flag, Field(
                    description="score the test split after training")] = True,
                ) -> None:
    """The top-level options of a training run."""


UpToAll = Annotated[int, Strict(), Field(ge=-1)]
Fraction = Annotated[float, Strict(), Field(ge=0, le=1)]
Limit = Annotated[NonNegativeInt | Fraction | None,
                  Field(description="a whole number of batches, or a fraction of them")]


@checked
def trainer_options(max_epochs: Annotated[UpToAll | None, Field(description="-1: no limit")] = None,
                    max_steps: Annotated[UpToAll, Field(description="-1: no limit")] = -1,
                    check_val_every_n_epoch: Annotated[Count | None, Field(
                        description="epochs between evaluations")] = 1,
                    num_sanity_val_steps: Annotated[UpToAll, Field(description="-1: all of them")] = 0,
                    limit_train_batches: Limit = None, limit_val_batches: Limit = None,
                    limit_test_batches: Limit = None) -> None:
    """The trainer counts a run is sized by (Lightning's Trainer arguments of the same names)."""


def check_run_options(cfg: DictConfig) -> None:
    """The top-level and trainer options above, before anything is built: GdmError naming the first wrong."""
    with options_of("", cfg):
        run_options(**{k: cfg[k] for k in inspect.signature(run_options).parameters if k in cfg})
    trainer = cfg.get("trainer") or {}
    with options_of("trainer", trainer):
        names = inspect.signature(trainer_options).parameters
        trainer_options(**{k: trainer[k] for k in names if k in trainer})


# The options of the checkpoint tasks, read from their config nodes (sample, eval, translate).
Sampler = Annotated[str | None, Field(description=(
    "the sampler of a diffusion or flow model (e.g. heun, euler); null: the checkpoint's own"))]
Steps = Annotated[Count | None, Field(description="sampling steps of a diffusion or flow model; null: the "
                                                  "checkpoint's own")]
GuidanceScale = Annotated[float | None, Field(ge=0, allow_inf_nan=False, description=(
    "classifier-free guidance of a conditional diffusion or flow model; null: the checkpoint's own"))]


@checked
def sample_options(n: Annotated[Count, Field(description="the number of images to draw")] = 64,
                   seed: Annotated[NonNegativeInt, Field(description="the seed of the sample sequence")] = 0,
                   label: Annotated[NonNegativeInt | None, Field(
                       description="the class to draw; unset: every class")] = None,
                   sampler: Sampler = None, steps: Steps = None, guidance: GuidanceScale = None) -> None:
    """task=sample's options."""


SampleCount = Annotated[int, Strict(), Field(ge=2)]
Budgets = Annotated[Count | Annotated[list[Count], Field(min_length=1)] | None, Field(description=(
    "sampling steps of a diffusion or flow model, or a list of them to evaluate once each; null: the "
    "checkpoint's own"))]


@checked
def eval_options(num_samples: Annotated[SampleCount | None, Field(
                     description="generated samples for FID / KID; null: the run's own")] = None,
                 kid_subset_size: Annotated[SampleCount | None, Field(
                     description="KID's subset size; null: no KID")] = None,
                 sample_seeds: Annotated[Count, Field(description="sample seeds to evaluate with")] = 1,
                 sampler: Sampler = None, steps: Budgets = None, guidance: GuidanceScale = None,
                 nll_tolerance: Annotated[NLLTolerance | None, Field(description=(
                     "the likelihood's dopri5 tolerance; null: the checkpoint's own"))] = None) -> None:
    """task=eval's options."""


def check_steps_apply(model, key: str, steps: int | list[int] | None) -> None:
    """Steps given as `key` (`eval.steps`, `sample.steps`) to a model whose sampler chooses its own (an adaptive
    solver, dopri5: its NFE is measured, `nfe()` is None) would change nothing: GdmError in one sentence."""
    if steps is not None and getattr(model, "nfe", lambda: 1)() is None:
        group = key.split(".", 1)[0]
        raise GdmError(f"{key}={steps} has no effect: sampler {model.sampling_protocol()['sampler']} chooses its own "
                       f"steps (an adaptive solver; its NFE is measured): drop {key}, or give a fixed-step sampler "
                       f"({group}.sampler=heun, euler, ...).")


@checked
def translate_options(load_size: Annotated[Annotated[int, Strict(), Field(ge=8)] | None, Field(description=(
        "pixels of each image's short side before translating; null: each image's own size"))] = None,
                      ) -> None:
    """task=translate's options."""


def read_options(function, path: str, node: DictConfig | None) -> dict:
    """The options `function` declares, from config node `path` (defaults where unset), checked by it: a
    GdmError naming `path.key=value` for a wrong one."""
    signature = inspect.signature(inspect.unwrap(function))
    given = {name: node[name] for name in signature.parameters if node is not None and name in node}
    with options_of(path, node if isinstance(node, DictConfig) else None):
        function(**given)
    bound = signature.bind(**given)
    bound.apply_defaults()
    return dict(bound.arguments)
