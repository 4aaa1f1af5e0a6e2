"""The statistics every report table draws on: the paired two-level bootstrap (examples, calibration seeds), its
percentile interval and p, the exact McNemar test, Spearman's rho with its permutation test, Holm's correction, and
how much data would resolve an effect. The claims (reporting.claims), category_drop (reporting.drops), the floor
table (reporting.floor) and NSA-guided recovery (reporting.nsa) import them from here, so each is computed one way.

Every resampling is reproducible: a table row draws from its own generator (row_rng), seeded by the table's seed and
the row's name, so a row's interval does not depend on the other rows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
Scores = Mapping[str, Mapping[str, np.ndarray]]  # dataset -> arm -> (examples, seeds) per-example scores
Means = Mapping[tuple[str, str], np.ndarray]  # (dataset, arm) -> mean score, one value per bootstrap draw


# ---------------------------------------------------------------------------------------------- resampling


def row_rng(seed: int, name: str) -> np.random.Generator:
    """A table row's own generator, seeded by `seed` and the row's name: its interval does not depend on the
    other rows."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def resample_seeds(n_seeds: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """(iterations, seeds): how often each calibration seed is drawn in each bootstrap iteration."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=iterations)


def resample_examples(matrix: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Per iteration, the correct counts of each column over n examples drawn with replacement (same draws for
    every column: paired). Examples with the same 0/1 row are interchangeable, so drawing n rows is drawing
    multinomial counts over the distinct rows, weighted by how often each occurs: the same distribution as
    resampling indices, at a cost that does not grow with n (at most 2^(1 + S) distinct rows)."""
    patterns, counts = np.unique(matrix, axis=0, return_counts=True)
    drawn = rng.multinomial(len(matrix), counts / len(matrix), size=iterations)  # (B, distinct rows)
    return drawn @ patterns


def change_draws(matrix: np.ndarray, baselines: int, seed_counts: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """Per iteration: the mean over resampled seeds of (variant - baseline) accuracy on one dataset (mean_draws)."""
    baseline, variant = mean_draws(matrix, baselines, seed_counts, rng)
    return variant - baseline


def mean_draws(matrix: np.ndarray, baselines: int, seed_counts: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per iteration: the baseline's and the variant's accuracy on one dataset, each a mean over resampled seeds.

    matrix (examples, baselines + seeds) holds 0/1 scores: one baseline column shared by every seed (dense) or one
    per seed (plain pruning, against NSA-guided), then one column per seed. Examples are resampled paired over all
    columns; each iteration's accuracies are exact integer ratios."""
    n_seeds, n = seed_counts.shape[1], len(matrix)
    resampled = resample_examples(matrix, len(seed_counts), rng)  # (B, baselines + S) correct counts
    scale = n_seeds * n
    baseline = (seed_counts * resampled[:, :baselines]).sum(axis=1) / scale
    return baseline, (seed_counts * resampled[:, baselines:]).sum(axis=1) / scale


def bootstrap_means(scores: Scores, seeds: Mapping[str, tuple], iterations: int, rng: np.random.Generator
                    ) -> tuple[Means, Means]:
    """Each arm's mean score per dataset: as measured (one value) and per bootstrap draw. Examples are resampled
    paired over every arm of a dataset; each arm's seeds (columns) are resampled too, arms with the same seed labels
    together, and the same seed draws serve every dataset (a calibration sample is shared by all datasets)."""
    seed_counts = {label: resample_seeds(len(label), iterations, rng) for label in sorted(set(seeds.values()))}
    point, draws = {}, {}
    for dataset in sorted(scores):
        arms = sorted(scores[dataset])
        matrix = np.hstack([scores[dataset][arm] for arm in arms])
        sums = resample_examples(matrix, iterations, rng)  # (B, columns): column sums over resampled examples
        start = 0
        for arm in arms:
            width = scores[dataset][arm].shape[1]
            point[dataset, arm] = np.array([scores[dataset][arm].mean()])
            draws[dataset, arm] = ((seed_counts[seeds[arm]] * sums[:, start:start + width]).sum(axis=1)
                                   / (width * len(matrix)))
            start += width
    return point, draws


# ---------------------------------------------------------------------------------------------- effects and tests


def percentile_interval(changes: np.ndarray, iterations: int) -> tuple[float, float]:
    """The 95% percentile interval of the bootstrap changes (NaN for 0 iterations)."""
    if not iterations:
        return np.nan, np.nan
    low, high = np.quantile(changes, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided percentile bootstrap p of 'the effect is 0': twice the smaller tail share at 0, with the +1 that
    keeps it above 0 for a finite number of draws."""
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))


def measure(statistic: Callable[[Means], np.ndarray], point: Means, draws: Means, iterations: int) -> dict:
    """A statistic's effect, 95% percentile interval, bootstrap standard error and bootstrap p."""
    values = statistic(draws)
    low, high = percentile_interval(values, iterations)
    return {"effect": float(statistic(point)[0]), "ci_low": low, "ci_high": high,
            "se": float(values.std(ddof=1)) if iterations > 1 else math.nan, "p": bootstrap_p(values)}


def mean_difference(datasets: Iterable[str], arm: str, baseline: str) -> Callable[[Means], np.ndarray]:
    """The mean over datasets of arm minus baseline."""
    datasets = list(datasets)
    return lambda means: sum(means[d, arm] - means[d, baseline] for d in datasets) / len(datasets)


def difference(first: Callable[[Means], np.ndarray], second: Callable[[Means], np.ndarray]
               ) -> Callable[[Means], np.ndarray]:
    return lambda means: first(means) - second(means)


def mcnemar_p(x: Sequence[int], y: Sequence[int]) -> float:
    """Exact two-sided McNemar p of two 0/1 score lists on the same examples: the binomial test of the examples only
    x gets right among those where x and y differ (1 when they never differ)."""
    x, y = np.asarray(x), np.asarray(y)
    only_x, only_y = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    if only_x + only_y == 0:
        return 1.0
    return float(stats.binomtest(only_x, only_x + only_y, 0.5).pvalue)


def spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along an axis (ties get mean ranks), vectorised over the others."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx, ry = rx - rx.mean(axis=axis, keepdims=True), ry - ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def spearman_test(x: np.ndarray, y: np.ndarray, iterations: int, rng: np.random.Generator) -> dict:
    """Spearman's rho, its permutation p (pairings; exact when all pairings fit in the iterations) and a percentile
    bootstrap interval over the points (draws without spread in x or y are left out)."""
    rho = float(spearman(x, y))
    test = stats.permutation_test((x, y), spearman, permutation_type="pairings", vectorized=True,
                                  n_resamples=iterations, rng=rng)
    picks = rng.integers(0, len(x), size=(iterations, len(x)))
    xs, ys = x[picks], y[picks]
    spread = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    values = spearman(xs[spread], ys[spread], axis=1)
    low, high = percentile_interval(values, len(values)) if len(values) else (math.nan, math.nan)
    return {"effect": rho, "ci_low": low, "ci_high": high, "p": float(test.pvalue), "n": len(x)}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest of m becomes the running maximum of
    (m - i + 1) p_(i), capped at 1, in the original order."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


# ---------------------------------------------------------------------------------------------- data needed


def examples_needed(effect: float, se: float, n: float, alpha: float, power: float) -> int | None:
    """Examples per dataset at which an effect of this size is found at two-sided level alpha with this power (normal
    approximation, the standard error shrinking as 1/sqrt(n)); None when the effect is 0 or the error unknown."""
    if not effect or not math.isfinite(effect) or not math.isfinite(se) or se <= 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(n * (z * se / abs(effect)) ** 2)


def points_needed(r: float, alpha: float, power: float) -> int | None:
    """Variants at which a correlation of this size is found at two-sided level alpha with this power (Fisher's z:
    ((z_{1-alpha/2} + z_power) / atanh r)^2 + 3); None for r 0 or undefined."""
    if not r or not math.isfinite(r) or abs(r) >= 1:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil((z / math.atanh(abs(r))) ** 2 + 3)
