"""Runs grouped into one table per metric and protocol: per configuration n seeds, mean, std, the t-interval
and the best seed, and for each pair of configurations the difference with its interval and one sentence
saying whether it is resolved. Values measured with different protocols never share a table: `mismatches`
says which runs differ from which, and in what."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from gdm.compare.runs import Run
from gdm.compare.stats import CONFIDENCE, Difference, Interval, difference, interval
from gdm.evaluation.context import differences, how_produced, measurement_id

# Words in a metric's name that say which way is better; other values (a discriminator's mean output, ...)
# get no "best" and no "better".
LOWER_IS_BETTER = ("fid", "kid", "copies", "loss", "nll", "bpd", "l1", "mse")
HIGHER_IS_BETTER = ("precision", "recall", "density", "coverage", "acc")


def direction(metric: str) -> str | None:
    """"min", "max", or None when the name does not say which way is better."""
    name = metric.rsplit("/", 1)[-1]
    if any(word in name for word in LOWER_IS_BETTER):
        return "min"
    if any(word in name for word in HIGHER_IS_BETTER):
        return "max"
    return None


@dataclass
class Row:
    configuration: str
    label: str  # the configuration without the overrides all compared runs share
    runs: list[Run]
    seeds: list  # the seed of each value (None when unknown)
    values: list[float]
    stats: Interval
    best: float

    def by_seed(self) -> dict | None:
        """{seed: value} when every value has its own known seed, else None (no pairing)."""
        if None in self.seeds or len(set(self.seeds)) != len(self.seeds):
            return None
        return dict(zip(self.seeds, self.values))


@dataclass
class Comparison:
    a: str
    b: str
    diff: Difference
    sentence: str


@dataclass
class MetricTable:
    metric: str
    protocol: dict
    rows: list[Row]
    comparisons: list[Comparison] = field(default_factory=list)
    sampling: list[str] = field(default_factory=list)  # protocol fields on how the models sample that differ

    @property
    def direction(self) -> str | None:
        return direction(self.metric)

    def best_row(self) -> Row | None:
        rows = [r for r in self.rows if not math.isnan(r.stats.mean)]
        if not rows or self.direction is None:
            return None
        return (min if self.direction == "min" else max)(rows, key=lambda r: r.stats.mean)


def fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def sentence(metric: str, a: str, b: str, d: Difference) -> str:
    how = "paired by seed" if d.paired else "Welch, unpaired"
    text = (f"{metric}: {a} − {b} = {fmt(d.estimate)}, {d.confidence:.0%} CI [{fmt(d.low)}, {fmt(d.high)}] "
            f"({how}, n = {d.n_a} and {d.n_b}): ")
    if math.isnan(d.low):
        return text + "no interval (a configuration has a single seed); run more seeds."
    if not d.resolved:
        return text + f"not resolved at {d.confidence:.0%} (the interval contains 0)."
    higher, lower = (a, b) if d.estimate > 0 else (b, a)
    if direction(metric) is None:
        return text + f"resolved at {d.confidence:.0%}: {higher} is higher."
    return text + f"resolved at {d.confidence:.0%}: {higher if direction(metric) == 'max' else lower} is better."


def labels(runs: list[Run]) -> tuple[dict[str, str], str]:
    """Each configuration without the overrides every run shares (in full where it has no others: it is not the
    defaults), and those shared overrides."""
    configurations = list(dict.fromkeys(r.configuration for r in runs))
    if len(configurations) < 2:
        return {c: c for c in configurations}, ""
    common = set.intersection(*(set(c.split()) for c in configurations))
    short = {c: " ".join(o for o in c.split() if o not in common) or c for c in configurations}
    return short, " ".join(o for o in configurations[0].split() if o in common)


def metric_tables(runs: list[Run], confidence: float = CONFIDENCE) -> tuple[list[MetricTable], list[str]]:
    """Tables of the finished runs, per metric and measurement protocol, and the sentences on protocol
    mismatches. Protocols that differ only in how each model samples (`MODEL_FIELDS`) share a table."""
    finished = [r for r in runs if r.finished]
    short, _ = labels(finished)
    metrics = sorted({name for r in finished for name in r.values}, key=lambda m: (m.startswith("best "), m))
    tables, mismatches = [], []
    for metric in metrics:
        by_protocol: dict[str, list[Run]] = {}
        for r in finished:
            if metric in r.values:
                by_protocol.setdefault(measurement_id(r.protocols[metric]), []).append(r)
        if len(by_protocol) > 1:
            mismatches.append(mismatch_sentence(metric, list(by_protocol.values())))
        for group in by_protocol.values():
            tables.append(table(metric, group, short, confidence))
    return tables, mismatches


def table(metric: str, runs: list[Run], short: dict[str, str], confidence: float) -> MetricTable:
    configurations: dict[str, list[Run]] = {}
    for r in runs:
        configurations.setdefault(r.configuration, []).append(r)
    choose = max if direction(metric) == "max" else min
    rows = []
    for name, members in configurations.items():
        values = [r.values[metric] for r in members]
        best = choose(values) if direction(metric) else math.nan
        rows.append(Row(name, short[name], members, [r.seed for r in members], values, interval(values, confidence),
                        best))
    result = MetricTable(metric, runs[0].protocols[metric], rows)
    result.sampling = sorted({d.split(".")[0] for r in runs for d in differences(result.protocol, r.protocols[metric])
                              if how_produced(d)})
    for row_a, row_b in itertools.combinations(rows, 2):
        a, b = row_a.by_seed(), row_b.by_seed()
        if a is None or b is None:  # unpaired: any distinct keys will do
            a, b = dict(enumerate(row_a.values)), {-1 - i: v for i, v in enumerate(row_b.values)}
        d = difference(a, b, confidence)
        result.comparisons.append(Comparison(row_a.label, row_b.label, d,
                                             sentence(metric, row_a.label, row_b.label, d)))
    return result


def mismatch_sentence(metric: str, groups: list[list[Run]]) -> str:
    first = groups[0]
    parts = []
    for group in groups[1:]:
        what = differences(first[0].protocols[metric], group[0].protocols[metric])
        parts.append(f"{', '.join(str(r.dir) for r in group)} (differing in {', '.join(what) or 'unknown fields'})")
    return (f"{metric} was measured with different protocols: {'; '.join(parts)} against "
            f"{', '.join(str(r.dir) for r in first)}; each protocol gets its own table and they are not compared.")


def flat_rows(tables: list[MetricTable]) -> list[dict]:
    """One row per metric, protocol and configuration, for CSV files and W&B tables."""
    rows = []
    for t in tables:
        for row in t.rows:
            s = row.stats
            rows.append({"metric": t.metric, "protocol": t.protocol.get("id"), "configuration": row.configuration,
                         "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.low, "ci_high": s.high,
                         "confidence": s.confidence, "best_seed_value": row.best,
                         "seeds": " ".join(str(seed) for seed in row.seeds)})
    return rows
