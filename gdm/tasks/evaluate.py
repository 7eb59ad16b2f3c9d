"""`task=eval`: score a checkpoint with the same Evaluator as training and write `eval.json`.

    python run.py task=eval ckpt_path=RUN/checkpoints/best.ckpt [eval.num_samples=10000] [eval.split=test]

The model, data and metrics come from the config saved in the checkpoint; anything under model / data /
metrics set on the command line wins (e.g. `data.root=` where the data lives on this machine,
`metrics.features=dinov2`, which the checkpoint's monitor then follows), except the settings the weights
were trained for: a translator's direction, the image size and channels stay the checkpoint's when another
data group is named (`data=paired data.root=DIR`), and a value that contradicts the weights (these, the
classes, the latent size, ...) is refused (a fully convolutional translator may be evaluated at another
`data.image_size`: logged and recorded in each protocol). The `eval.*` options reach every metric through
one route (`eval_settings`: each metric whose constructor takes the parameter gets it; a typed
`metrics.NAME.KEY=` wins) and eval.json lists what they set.

Computed: the run's metrics (FID, precision / recall, density / coverage and the copy fraction, plus KID
here; class accuracy for conditional models; both directions' FID, cycle L1 and label preservation for
CycleGAN; FID, L1, PSNR, SSIM for pix2pix) with `eval.num_samples` generated samples against real
`eval.split` images, each named by the split it was measured against (`test/fid_digits`; the copy fraction
against the training images: `train/copies_digits`), the model's validation losses on the validation split
(`val/...`), and the model's test metrics when it has them (the VAE's IWAE NLL). Each value is printed
beside its protocol (features and weights hash, resize, sample counts, split, seed) and stored with it in
eval.json, at the checkpoint's step, with the seed and image shape that ran.

`eval.sample_seeds=N` (N > 1) evaluates the same checkpoint N times, with each metric's seed (e.g.
metrics.fid.seed) + 0, ..., N-1, and adds to eval.json, per metric, the mean, std and Student-t interval
over the sample seeds ("sample_seeds"): the spread from drawing other samples, to set beside the spread
over training seeds (`task=compare` shows both when given this directory). "metrics" holds the values of
the first seed.

`eval.sampler=NAME` / `eval.steps=S` sample with another sampler or number of steps than the checkpoint's
(`model.set_sampling`; null: the checkpoint's own), for a model that has them (diffusion, flow: a GAN or a VAE,
drawn in one forward pass, is refused in one sentence before anything is evaluated). `eval.steps=[1,2,4,8]`
evaluates the checkpoint once per budget (each with every sample seed) and adds "budgets" to eval.json: per
budget its steps, sampler, NFE, seconds per 1,000 samples (`val/sample_seconds_per_1000`) and metrics (and
their spread over sample seeds); "metrics" holds the first budget's, as with sample seeds. "eval_options" lists
every eval option as it ran. `eval.nll_tolerance=T` solves a flow's or EDM model's test likelihood
(`test/nll_bpd`) to another tolerance than the checkpoint's `model.nll_tolerance` (recorded in its protocol).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from hydra.utils import get_class
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from gdm.checkpoints import (
    check_model_group,
    check_trained_settings,
    checkpoint_step,
    command_line_keys,
    config_for_checkpoint,
    load_state,
    read_checkpoint,
)
from gdm.compare.stats import interval
from gdm.console import print_config
from gdm.data.base import SPLITS
from gdm.errors import GdmError
from gdm.errors import typed as typed_value
from gdm.evaluation.context import describe, with_id
from gdm.evaluation.evaluator import Evaluator, write_json
from gdm.metrics.sample_quality import COST
from gdm.models.base import Samples, Translates
from gdm.tasks.build import build_datamodule, build_evaluator, build_model, build_trainer, seed_option
from gdm.tasks.options import check_steps_apply, eval_options, options_of, read_options

log = logging.getLogger(__name__)


# eval option -> the metric constructor parameters it sets (each metric that has the parameter gets it).
EVAL_SETTINGS = {"split": ("split", "real_split"), "num_samples": ("num_samples",),
                 "kid_subset_size": ("kid_subset_size",)}
KEEP = ("num_samples",)  # options whose null means "the run's own value" rather than "off"


def metric_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The metrics group's entries that build a metric (plain settings beside them configure the evaluator)."""
    return {name: node for name, node in cfg.metrics.items()
            if isinstance(node, DictConfig) and "_target_" in node}


def takes(node: DictConfig) -> set[str]:
    """The parameters of a metric node's constructor."""
    return set(inspect.signature(get_class(node._target_)).parameters)


def eval_settings(cfg: DictConfig, opts: DictConfig) -> dict[str, object]:
    """Set the eval options on every metric of `cfg.metrics` whose constructor takes them, except keys typed
    as `metrics.NAME.KEY=`; returns what was set, by config key. An eval option typed on the command line that
    no metric takes is refused in one sentence (it would change nothing)."""
    typed = {key for key, deleted in command_line_keys() if not deleted}
    applied, used = {}, set()
    with open_dict(cfg):
        for name, node in metric_nodes(cfg).items():
            params = takes(node)
            for option, targets in EVAL_SETTINGS.items():
                for param in targets:
                    if param not in params:
                        continue
                    used.add(option)
                    value = opts.get(option)
                    if f"metrics.{name}.{param}" in typed or (value is None and option in KEEP):
                        continue
                    node[param] = value
                    applied[f"metrics.{name}.{param}"] = value
    unused = [key for key in typed if key.partition(".")[0] == "eval" and key[5:] in EVAL_SETTINGS
              and key[5:] not in used]
    if unused:
        key = unused[0]
        raise GdmError(f"{key}={typed_value(opts.get(key[5:]))} sets no metric of this checkpoint (metrics: "
                       f"{', '.join(metric_nodes(cfg))}): drop it.")
    return applied


def shift_seeds(cfg: DictConfig, offset: int) -> None:
    """The next sample seed: every metric that draws samples (a `seed` parameter) by `offset`."""
    with open_dict(cfg):
        for node in metric_nodes(cfg).values():
            if "seed" in takes(node):
                node.seed = node.get("seed", 0) + offset


def split_name(name: str, protocol: dict | None, split: str) -> str:
    """A value of the metrics (measured on generated or translated images: its protocol counts them) is named
    by the real split its protocol records (`test/fid_digits`, `train/copies_digits`; `split` when it has
    none, as the class accuracy); the model's own validation losses keep `val/`."""
    if not (name.startswith("val/") and protocol and "num_generated" in protocol):
        return name
    real = str(protocol.get("real_split") or protocol.get("split") or split)
    return f"{real.rsplit('/', 1)[-1]}/{name[4:]}"


def evaluate(cfg: DictConfig) -> float | None:
    if not cfg.get("ckpt_path"):
        raise GdmError("task=eval needs ckpt_path=RUN/checkpoints/best.ckpt.")
    opts = cfg.eval
    if opts.split not in SPLITS:
        raise GdmError(f"eval.split='{opts.split}' is not a split; choose one of {', '.join(SPLITS)}.")
    options = read_options(eval_options, "eval", opts)
    if OmegaConf.select(cfg, "trainer.limit_val_batches") == 0:  # 0 or 0.0
        raise GdmError("trainer.limit_val_batches=0 skips the validation loop, where task=eval computes every "
                       "metric of the samples (FID and those beside it): drop it, or give eval.num_samples to "
                       "evaluate on fewer samples.")
    if isinstance(options["steps"], ListConfig):
        options["steps"] = list(options["steps"])  # plain values for eval.json
    seeds = options["sample_seeds"]
    budgets = sampling_budgets(options["steps"])
    seed = L.seed_everything(seed_option(cfg), workers=True)  # the VAE's ELBO / IWAE draw from the global RNG
    checkpoint = read_checkpoint(cfg.ckpt_path)
    check_model_group(cfg, checkpoint, cfg.ckpt_path, "eval")
    cfg = config_for_checkpoint(cfg, checkpoint)
    trained_split = OmegaConf.select(cfg, "metrics.fid.real_split")
    with open_dict(cfg):
        cfg.seed = seed  # seed=null: the one drawn, recorded in eval.json
    applied = eval_settings(cfg, opts)
    if seeds > 1 and cfg.metrics.get("fid") is None:
        raise GdmError(f"eval.sample_seeds={seeds} draws other samples of a sampling model (metrics.fid.seed), and "
                       "this checkpoint's metrics have none: use eval.sample_seeds=1.")
    print_config(cfg)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule, from_checkpoint=True)
    resizable = isinstance(model, Translates)  # fully convolutional: runs at any image size
    changed = check_trained_settings(model, checkpoint, cfg.ckpt_path, resizable=resizable, cfg=cfg)
    model = load_state(model, checkpoint, cfg.ckpt_path)
    if options["nll_tolerance"] is not None:
        changed = set_nll_tolerance(model, options["nll_tolerance"], checkpoint, changed)
    if changed:
        log.warning(f"evaluating with settings other than the checkpoint's ({'; '.join(changed)}): recorded "
                    "in eval.json and in the protocol of each value they change.")
    if options["guidance"] is not None:  # kept by every budget's set_sampling below
        set_guidance(model, options["guidance"], "eval", opts)
    for steps in budgets:  # every budget is checked before the first evaluation
        set_sampling(model, options["sampler"], steps, opts)
    check_steps_apply(model, "eval.steps", options["steps"])
    trainer = None

    def evaluate_once(first: bool) -> Evaluator:
        nonlocal trainer
        if not first:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        evaluator = build_evaluator(cfg, report=None, save_checkpoints=False, step=checkpoint_step(checkpoint))
        trainer = build_trainer(cfg, [evaluator], loggers=[])
        trainer.validate(model, datamodule=datamodule, verbose=False)
        return evaluator

    per_budget = evaluate_budgets(model, options["sampler"], budgets, seeds, evaluate_once,
                                  lambda offset: shift_seeds(cfg, offset), opts)
    per_seed = per_budget[0]
    evaluator = per_seed[0]
    set_sampling(model, options["sampler"], budgets[0], opts)  # the test metrics sample as "metrics" did
    results = trainer.test(model, datamodule=datamodule, verbose=False) if is_overridden("test_step", model) else []
    test = results[0] if results else {}  # none when the test loop ran no batch (limit_test_batches=0)
    tested = next(cb for cb in trainer.callbacks if isinstance(cb, Evaluator)).protocols if test else {}
    measured = {**evaluator.protocols, **{k: p for k, p in tested.items() if k in test}}  # the test step's too
    protocols = {name: with_id({**p, "changed_from_checkpoint": changes}) if (changes := changes_to(name, changed))
                 else p for name, p in measured.items()}
    names = {name: split_name(name, protocols.get(name), opts.split) for name in {**evaluator.final, **test}}
    values = {**evaluator.final, **test}
    report = {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser().resolve()),
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "step": evaluator.final.get("step"),
        "global_step": checkpoint.get("global_step"),
        "epoch": checkpoint.get("epoch"),
        "split": opts.split,
        "seed": cfg.seed,
        "image_shape": list(model.hparams.image_shape),
        "eval_settings": applied,
        "eval_options": {**options, "split": opts.split},
        "changed_from_checkpoint": changed,
        "metrics": dict(sorted((names.get(name, name), value) for name, value in values.items()
                               if name.startswith(("val/", "test/")))),
        "protocols": {names[name]: p for name, p in protocols.items()},
        "names_in_training": {new: old for old, new in names.items() if new != old},
        "trained_split": trained_split,  # the real split of the training run's sample metrics
    }
    if seeds > 1:
        report["sample_seeds"] = sample_seed_spread(per_seed, names)
    if isinstance(options["steps"], list):
        report["budgets"] = budget_records(per_budget, budgets, names)
    # the checkpoint's monitored metric, under the name given here (an eval multirun's summary shows its value)
    report["monitor"] = split_name(cfg.monitor, protocols.get(cfg.monitor), opts.split)
    write_report(report, Path(cfg.paths.output_dir) / "eval.json", trained_split)
    return report["metrics"].get(report["monitor"])


def sampling_budgets(steps: int | list[int] | None) -> list[int | None]:
    """The steps of each evaluation: `eval.steps` as a list (null: the checkpoint's own, once). GdmError for a
    list that repeats a value (the same budget evaluated twice, one row in the plots)."""
    budgets = list(steps) if isinstance(steps, list) else [steps]
    if len(set(budgets)) < len(budgets):
        raise GdmError(f"eval.steps={budgets} repeats a budget: give each number of steps once.")
    return budgets


def set_guidance(model, guidance: float, group: str, opts: DictConfig) -> None:
    """A conditional diffusion or flow model's guidance scale from `<group>.guidance`; one sentence naming the key
    for a model that has none to set."""
    if not isinstance(model, Samples):
        raise GdmError(f"{group}.guidance={guidance} sets how a model draws samples, and {type(model).__name__} "
                       "translates images instead: drop it.")
    with options_of(group, opts):
        model.set_sampling(guidance=guidance)


def set_nll_tolerance(model, tolerance: float, checkpoint: dict, changed: list[str]) -> list[str]:
    """The tolerance of the test likelihood's ODE solver from `eval.nll_tolerance`; returns `changed` (the settings
    other than the checkpoint's, as `name: old -> new`) with it. One sentence for a model without that ODE, or for
    `model.nll_tolerance` typed beside it."""
    if not getattr(model, "has_likelihood", lambda: False)():
        why = ("a latent model's density is over its autoencoder's codes, not the images"
               if getattr(model, "latent", None) is not None else
               f"this checkpoint's {type(model).__name__}{getattr(model, 'formulation_words', lambda: '')()} has "
               "no probability-flow ODE to solve")
        raise GdmError(f"eval.nll_tolerance={tolerance} sets the solver of the probability-flow ODE behind "
                       f"test/nll_bpd, and {why}: drop it.")
    if "model.nll_tolerance" in {key for key, deleted in command_line_keys() if not deleted}:
        raise GdmError(f"model.nll_tolerance and eval.nll_tolerance={tolerance} both set the likelihood's "
                       "tolerance on a checkpoint: give eval.nll_tolerance alone.")
    model.nll_tolerance = tolerance
    saved = checkpoint.get("hyper_parameters", {}).get("nll_tolerance")
    kept = [c for c in changed if not c.startswith("nll_tolerance:")]
    return kept + ([f"nll_tolerance: {typed_value(saved)} -> {typed_value(tolerance)}"] if saved != tolerance else [])


# Settings whose change reaches some metrics only: the likelihood solver's tolerance changes test/nll(_bpd) alone.
CHANGES_ONLY = {"nll_tolerance": ("test/nll",)}


def changes_to(name: str, changed: list[str]) -> list[str]:
    """The settings among `changed` (`name: old -> new`) that change metric `name`, for its protocol."""
    return [c for c in changed if name.startswith(CHANGES_ONLY.get(c.partition(":")[0], ("",)))]


def set_sampling(model, sampler: str | None, steps: int | None, opts: DictConfig) -> None:
    """`model.set_sampling(sampler, steps)` when either is given; a value the model cannot take is one sentence
    naming `eval.KEY=value` (a GAN's or a VAE's for any value: they draw in one forward pass)."""
    if sampler is None and steps is None:
        return
    if not isinstance(model, Samples):
        given = "eval.sampler" if sampler is not None else "eval.steps"
        raise GdmError(f"{given}={typed_value(opts.get(given[5:]))} sets how a model draws samples, and "
                       f"{type(model).__name__} translates images instead: drop it.")
    with options_of("eval", opts):
        model.set_sampling(sampler=sampler, steps=steps)


def evaluate_budgets(model, sampler: str | None, budgets: list[int | None], seeds: int,
                     evaluate_once: Callable[[bool], Evaluator], shift: Callable[[int], None],
                     opts: DictConfig) -> list[list[Evaluator]]:
    """Per budget (steps), the evaluator of each sample seed: `evaluate_once(first)` runs one evaluation of the
    model as it is set; `shift(offset)` moves every metric's sample seed by `offset`."""
    per_budget = []
    for b, steps in enumerate(budgets):
        set_sampling(model, sampler, steps, opts)
        per_seed = []
        for i in range(seeds):
            if i:
                shift(1)
            per_seed.append(evaluate_once(b == 0 and i == 0))
        shift(1 - seeds)  # back to the first seed for the next budget
        per_budget.append(per_seed)
    return per_budget


def budget_records(per_budget: list[list[Evaluator]], budgets: list[int | None],
                   names: dict[str, str]) -> list[dict]:
    """eval.json's "budgets": per budget its steps, sampler and NFE (from a sample metric's protocol), the seconds
    per 1,000 samples, the values of the first sample seed and, with several, their spread over the seeds."""
    records = []
    for steps, per_seed in zip(budgets, per_budget):
        first = per_seed[0]
        sampling = next((p["sampling"] for p in first.protocols.values() if p and "sampling" in p), {})
        record = {"steps": steps, "sampler": sampling.get("sampler"), "nfe": sampling.get("nfe"),
                  "seconds_per_1000": first.final.get(COST),
                  "metrics": dict(sorted((names.get(k, k), v) for k, v in first.final.items()
                                         if k.startswith("val/")))}
        if len(per_seed) > 1:
            record["sample_seeds"] = sample_seed_spread(per_seed, names)
        records.append(record)
    return records


def sample_seed_spread(evaluators: list[Evaluator], names: dict[str, str]) -> dict[str, dict]:
    """Per metric: n, mean, std and interval over the sample seeds, with each seed's value and sample seed."""
    spread = {}
    for name in evaluators[0].final:
        if not name.startswith("val/"):
            continue
        values = [ev.final[name] for ev in evaluators]
        seeds = [ev.protocols.get(name, {}).get("sample_seed") for ev in evaluators]
        spread[names.get(name, name)] = {**interval(values).as_dict(), "values": values,
                                         "sample_seeds": seeds}
    return spread


def kid_definition(protocol: dict) -> str:
    """What torchmetrics' KID value and its `_std` are, for a reader who places the numbers."""
    return (f"mean ± std of the unbiased MMD² over {protocol.get('subsets')} random subsets of "
            f"{protocol.get('subset_size')} images per side, cubic polynomial kernel of the features, in the "
            "kernel's units; the std is the spread of single-subset estimates (each unbiased, so one can be "
            "negative), not the error of the mean")


def is_kid(name: str, protocol: dict | None) -> bool:
    return bool(protocol) and protocol.get("metric") == "kid" and not name.endswith("_std")


def budget_line(budget: dict) -> str:
    """'  steps 8: heun, NFE 15, 1.2 s per 1,000 samples; test/fid_digits 31.4' for the log."""
    seconds = budget["seconds_per_1000"]
    cost = f", {seconds:.4g} s per 1,000 samples" if seconds is not None else ""
    fids = ", ".join(f"{k} {v:.6g}" for k, v in budget["metrics"].items() if k.split("/", 1)[-1].startswith("fid"))
    return f"  steps {budget['steps']}: {budget['sampler']}, NFE {budget['nfe']}{cost}; {fids}"


@rank_zero_only
def write_report(report: dict, path: Path, trained_split: str | None = None) -> None:
    definitions = {name: kid_definition(p) for name, p in report["protocols"].items() if is_kid(name, p)}
    if definitions:
        report["definitions"] = definitions
    write_json(path, report)
    spread = [f"  {name}  {s['mean']:.6g} ± {s['half_width']:.3g} (std {s['std']:.3g}, n {s['n']} sample seeds, "
              f"{s['confidence']:.0%} Student-t)" for name, s in report.get("sample_seeds", {}).items()]
    if spread:
        log.info("over sample seeds:\n" + "\n".join(spread))
    if report.get("budgets"):
        log.info("per sampling budget (eval.steps):\n" + "\n".join(map(budget_line, report["budgets"])))
    width = max(map(len, report["metrics"]), default=0)
    lines = []
    for name, value in report["metrics"].items():
        protocol = report["protocols"].get(name)
        if name.endswith("_std") and name[:-4] in report["metrics"]:
            continue  # printed beside its mean
        if is_kid(name, protocol):
            std = report["metrics"].get(f"{name}_std", float("nan"))
            lines.append(f"  {name:<{width}}  {value:.6g} ± {std:.3g} ({kid_definition(protocol)})  "
                         f"{describe(protocol)}")
        else:
            said = describe(protocol) if protocol else ""
            lines.append(f"  {name:<{width}}  {value:<12.6g}  {said}".rstrip())
    log.info(f"{report['model']} at step {report['step']} ({report['checkpoint']}), real split {report['split']}:\n"
             + "\n".join(lines))
    if report["changed_from_checkpoint"]:
        log.info(f"settings other than the checkpoint's: {'; '.join(report['changed_from_checkpoint'])}")
    real = [p["num_real"] for p in report["protocols"].values()
            if p and p.get("real_split") == report["split"] and "num_real" in p]
    if trained_split not in (None, report["split"]) and real:
        # A newcomer's first question: why the same checkpoint scores worse here than in training.
        log.info(f"FID here compares the samples with the {report['split']} split's {real[0]} images, training's "
                 f"with the {trained_split} split: other images, and FID is biased upwards the fewer there are, so "
                 f"the two differ (eval.split={trained_split} measures as training did).")
    log.info(f"written: {path.resolve()}")
