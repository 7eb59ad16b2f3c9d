"""Mean, spread and Student-t confidence intervals of a metric over seeds, and of the difference of two
configurations (paired by seed when both ran the same seeds: the seed's share of the spread cancels)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """`mean` ± `half_width` is the `confidence` Student-t interval of the mean of `n` values (std: the
    sample standard deviation, ddof=1). With n = 1 the spread and the interval are unknown (NaN)."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def interval(values, confidence: float = CONFIDENCE) -> Interval:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("an interval needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(1, mean, math.nan, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(x.size)
    if sem == 0:
        return Interval(int(x.size), mean, std, mean, mean, confidence)
    low, high = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sem)
    return Interval(int(x.size), mean, std, float(low), float(high), confidence)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its interval; `paired`: over per-seed differences, else Welch's t."""

    estimate: float
    low: float
    high: float
    paired: bool
    n_a: int
    n_b: int
    confidence: float = CONFIDENCE

    @property
    def resolved(self) -> bool:
        """The interval excludes zero: the sign of the difference is known at this confidence."""
        return not (math.isnan(self.low) or self.low <= 0 <= self.high)


def difference(a: dict, b: dict, confidence: float = CONFIDENCE) -> Difference:
    """`a`, `b`: {seed: value}. Paired t-interval of the per-seed differences when both hold the same seeds
    (at least 2), else Welch's unequal-variance t-interval of the difference of means."""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        d = interval([a[s] - b[s] for s in seeds], confidence)
        return Difference(d.mean, d.low, d.high, True, len(a), len(b), confidence)
    x, y = np.asarray(list(a.values()), float), np.asarray(list(b.values()), float)
    estimate = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Difference(estimate, math.nan, math.nan, False, x.size, y.size, confidence)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(estimate, estimate, estimate, False, x.size, y.size, confidence)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return Difference(estimate, estimate - half, estimate + half, False, x.size, y.size, confidence)
