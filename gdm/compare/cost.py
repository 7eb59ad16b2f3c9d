"""Quality against compute: each sample metric against the sampling budget (NFE: the net's forward passes per
sample) and against the sampling time (seconds per 1,000 samples of the model's `generate` calls), one line per
configuration.

The points come from each finished run's final evaluation (one budget: the model's own) and from task=eval
directories that evaluated a checkpoint at several budgets (`eval.steps=[...]`, eval.json "budgets"). A family
drawn in one forward pass (GAN, VAE) is a single point at NFE 1. At each budget a configuration's point is the
mean over its training seeds, with the Student-t band where it has several; its x is the seeds' mean NFE and
mean time. Only values measured with one protocol share a plot (`measurement_id`: the sampling may differ, the
metric may not), and times are only comparable on one device: the device each point was timed on is listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdm.compare.runs import Run, training_names, training_run
from gdm.compare.stats import CONFIDENCE, Interval, interval
from gdm.compare.tables import fmt, labels
from gdm.evaluation.context import describe, measurement_id
from gdm.metrics.sample_quality import COST


@dataclass
class Budget:
    """One evaluation of one model at one sampling budget."""

    source: Path  # the run or eval directory
    configuration: str | None
    family: str | None
    seed: int | None
    steps: int | None
    nfe: float
    seconds_per_1000: float | None
    device: str | None
    values: dict[str, float]  # metric (the training name) -> value
    protocols: dict[str, dict]


@dataclass
class Point:
    """A configuration at one budget: x (mean NFE, mean seconds per 1,000 samples) and the metric over seeds."""

    steps: int | None
    nfe: float
    seconds_per_1000: float | None
    stats: Interval


@dataclass
class Line:
    configuration: str
    family: str | None
    points: list[Point]
    sampler: str | None = None


def sample_metric(name: str, protocol: dict | None) -> bool:
    """A value measured on a model's samples, with the sampling recorded (not the cost itself, not a spread)."""
    return bool(protocol) and "sampling" in protocol and name != COST and not name.endswith("_std")


def run_budget(run: Run) -> Budget | None:
    """A finished run's final evaluation as one budget; None when its protocols record no sampling."""
    sampled = {k: p for k, p in run.protocols.items() if not k.startswith("best ") and sample_metric(k, p)}
    if not run.finished or not sampled or run.evaluation:  # a task=eval directory's: `eval_budgets` reads it
        return None
    first = next(iter(sampled.values()))
    cost = first.get("sampling_cost") or {}
    return Budget(run.dir, run.configuration, run.family, run.seed, first["sampling"].get("steps"),
                  float(first["sampling"]["nfe"]), run.values.get(COST, cost.get("seconds_per_1000")),
                  cost.get("device"), {k: run.values[k] for k in sampled}, sampled)


def eval_budgets(eval_dir: Path) -> list[Budget]:
    """The budgets of a task=eval directory: each of `eval.steps=[...]`, else its one evaluation (none when its
    protocols record no sampling)."""
    report = json.loads((eval_dir / "eval.json").read_text())
    configuration, seed = training_run(report)
    names = training_names(report)  # eval names values by split (test/fid_digits); runs by training's (val/)
    protocols = {names.get(k, k): p for k, p in report.get("protocols", {}).items()}
    sampling = next((p["sampling"] for p in protocols.values() if p and "sampling" in p), None)
    if sampling is None:
        return []
    device = next((p["sampling_cost"].get("device") for p in protocols.values() if p and "sampling_cost" in p), None)
    metrics = report.get("metrics", {})
    seconds = next((v for k, v in metrics.items() if names.get(k, k) == COST), None)
    one = {"steps": sampling.get("steps"), "nfe": sampling["nfe"], "metrics": metrics, "seconds_per_1000": seconds}
    found = []
    for budget in report.get("budgets", [one]):
        values = {names.get(k, k): v for k, v in budget["metrics"].items()}
        sampled = {k: v for k, v in values.items() if sample_metric(k, protocols.get(k))}
        found.append(Budget(eval_dir, configuration or str(eval_dir), report.get("model"), seed, budget.get("steps"),
                            float(budget["nfe"]), budget.get("seconds_per_1000"), device, sampled,
                            {k: protocols[k] for k in sampled}))
    return found


def read_budgets(runs: list[Run], paths: list[str | Path]) -> list[Budget]:
    """Every budget: each finished run's final evaluation and each task=eval directory's budgets in `paths`."""
    found = [b for b in map(run_budget, runs) if b is not None]
    for given in paths:
        path = Path(given).expanduser()
        if (path / "eval.json").is_file():
            found += eval_budgets(path)
    return found


def families(budgets: list[Budget], runs: list[Run] = ()) -> list[str]:
    """The model families (classes) among the finished runs and the budgets, in order of appearance."""
    names = [r.family for r in runs if r.finished] + [b.family for b in budgets]
    return list(dict.fromkeys(n for n in names if n))


def metrics_drawn(budgets: list[Budget]) -> list[str]:
    """The sample metrics the budgets share, FID first."""
    names = sorted({m for b in budgets for m in b.values})
    return sorted(names, key=lambda m: (not m.rsplit("/", 1)[-1].startswith("fid"), m))


def lines(budgets: list[Budget], metric: str,
          confidence: float = CONFIDENCE) -> list[tuple[dict, list[Line]]]:
    """Per measurement protocol of `metric` (one of its protocols, and the lines): one line per configuration,
    a point per budget (steps, or NFE when a model has no steps) in increasing NFE."""
    short, _ = labels([Run(b.source, b.configuration or "?", b.seed, "finished") for b in budgets])
    by_protocol: dict[str, dict[tuple[str, str | None], list[Budget]]] = {}
    for b in budgets:
        if metric in b.values:  # a line per configuration and sampler (task=eval may sample with another)
            group = by_protocol.setdefault(measurement_id(b.protocols[metric]), {})
            sampler = (b.protocols[metric].get("sampling") or {}).get("sampler")
            group.setdefault((b.configuration or "?", sampler), []).append(b)
    drawn = []
    for configurations in by_protocol.values():
        found = []
        for (name, sampler), members in configurations.items():
            at: dict[object, list[Budget]] = {}
            for b in members:
                same = at.setdefault(b.steps if b.steps is not None else b.nfe, [])
                if b.seed is None or b.seed not in {o.seed for o in same}:  # one seed, one sample (run and eval)
                    same.append(b)
            points = []
            for same in at.values():
                seconds = [b.seconds_per_1000 for b in same if b.seconds_per_1000 is not None]
                points.append(Point(same[0].steps, float(np.mean([b.nfe for b in same])),
                                    float(np.mean(seconds)) if seconds else None,
                                    interval([b.values[metric] for b in same], confidence)))
            family = next((b.family for b in members if b.family), None)
            found.append(Line(short.get(name, name), family, sorted(points, key=lambda p: p.nfe), sampler))
        first = next(iter(configurations.values()))[0]
        drawn.append((first.protocols[metric], found))
    return drawn


def devices(budgets: list[Budget]) -> list[str]:
    """The devices the budgets' sampling was timed on, in order of appearance."""
    return list(dict.fromkeys(b.device for b in budgets if b.device))


def measurement(protocol: dict) -> str:
    """The protocol for a reader, without the sampling (which varies along the plot) and named by its
    measurement id."""
    rest = {k: v for k, v in protocol.items() if k != "sampling"}
    return describe({**rest, "id": measurement_id(protocol)})


def plot(metric: str, drawn: list[Line], protocol: dict, path: Path, confidence: float,
         timed_on: list[str] = ()) -> Path:
    """`metric` against NFE and against seconds per 1,000 samples (both log x; `timed_on`: the devices), one
    line per configuration."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for line in drawn:
        colour = None
        for ax, x_of in zip(axes, (lambda p: p.nfe, lambda p: p.seconds_per_1000)):
            points = [p for p in line.points if x_of(p) is not None]
            if not points:
                continue
            x = np.array([x_of(p) for p in points])
            mean = np.array([p.stats.mean for p in points])
            low = np.array([p.stats.mean if math.isnan(p.stats.low) else p.stats.low for p in points])
            high = np.array([p.stats.mean if math.isnan(p.stats.high) else p.stats.high for p in points])
            seeds = max(p.stats.n for p in points)
            how = ", ".join(w for w in (line.family or "?", line.sampler) if w)
            label = f"{line.configuration} ({how}, n={seeds})"
            drawn_line, = ax.plot(x, mean, marker="o", markersize=4, color=colour, label=label)
            colour = drawn_line.get_color()
            if len(x) > 1:
                ax.fill_between(x, low, high, color=colour, alpha=0.2)
            else:  # one budget (a one-pass family): a point with its interval
                ax.errorbar(x, mean, yerr=[mean - low, high - mean], color=colour, capsize=4)
    seconds = "seconds per 1,000 samples" + (f"\n({'; '.join(timed_on)})" if timed_on else "")
    for ax, label in zip(axes, ("NFE (net forward passes per sample)", seconds)):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        ax.set_xlabel(label, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(f"{metric} against sampling compute: mean over training seeds, {confidence:.0%} Student-t band\n"
                 f"{measurement(protocol)}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")  # the legend outside the axes, nothing clipped
    plt.close(fig)
    return path


def table_lines(metric: str, drawn: list[Line]) -> list[str]:
    """The plotted points as a markdown table (the figures behind the plot)."""
    rows = [f"| configuration | family | sampler | steps | NFE | s / 1,000 samples | n seeds | {metric} mean ± CI |",
            "|---|---|---|---|---|---|---|---|"]
    for line in drawn:
        for p in line.points:
            s = p.stats
            value = f"{fmt(s.mean)} ± {fmt(s.half_width)}" if not math.isnan(s.half_width) else fmt(s.mean)
            steps = "" if p.steps is None else str(p.steps)
            seconds = fmt(p.seconds_per_1000 if p.seconds_per_1000 is not None else math.nan)
            rows.append(f"| {line.configuration} | {line.family or '?'} | {line.sampler or ''} | {steps} | "
                        f"{fmt(p.nfe)} | {seconds} | {s.n} | {value} |")
    return rows
