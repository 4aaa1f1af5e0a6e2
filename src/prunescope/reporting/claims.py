"""The study's claims, each tested on the grid's own results: one row per claim and scope with the comparison made,
the effect size and its 95% interval, a paired test, a Holm correction over the whole table and a verdict.

Statistics (every number here is reproducible: each row draws from its own generator, seeded by `seed` and the row):

- Effects on accuracy compare model variants on the same examples. The 95% interval is a two-level percentile
  bootstrap: each iteration resamples every dataset's examples (the same draws for every variant: paired) and each
  variant's calibration seeds (the second level; variants pruned with the same calibration samples, e.g. NSA-guided
  and plain pruning, draw their seeds together). Its p-value is the bootstrap's two-sided percentile p,
  2 min(#{T* <= 0} + 1, #{T* >= 0} + 1) / (B + 1), so p < 0.05 exactly when the 95% interval excludes 0 (up to the
  +1s). A comparison of two single-seed variants on one dataset uses the exact McNemar test instead (a two-sided
  binomial test of the discordant pairs).
- Correlations across variants (perplexity and NSA's drop against the accuracy change) use Spearman's rho, a
  permutation test of the pairings, and a percentile bootstrap over the points for the interval.
- Holm's step-down correction runs over every tested row of the table; a row is supported when its Holm-adjusted p
  is below alpha and the effect has the claimed sign, contradicted when it is below alpha with the opposite sign,
  inconclusive otherwise. A claim without data in the grid is "not tested", with what to add to params.yaml.
- For an inconclusive row, how much data would resolve an effect of the observed size with probability `power` at
  level alpha / m (m tests in the table: the strictest level Holm applies), by the normal approximation
  n' = n ((z_{1 - a/2} + z_power) se / |effect|)^2, se the bootstrap standard error at the current n examples per
  dataset (for a paired 0/1 difference on one dataset, se^2 = var(d) / n: the textbook paired-difference formula);
  for a correlation, Fisher's z: n' = ((z_{1 - a/2} + z_power) / atanh|r|)^2 + 3 variants.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from prunescope.config import NO_CALIBRATION, parse_calibration_key, parse_pattern_key
from prunescope.io import atomic_path, read_result, write_json
from prunescope.reporting.drops import percentile_interval, resample_examples, row_rng
from prunescope.reporting.floor import above_floor, headroom_statistic
from prunescope.reporting.multiplicity import holm
from prunescope.reporting.tables import CATEGORIES, calibration_group

CLAIMS = {
    "sentiment_hurt_most": "Sentiment is hurt most by pruning",
    "calibration_changes_result": "The calibration data changes the result",
    "calibration_over_method": "At high sparsity, the calibration data matters more than the pruning method "
                               "(Ji et al., ICLR 2025)",
    "task_calibration_helps_own_task": "Task-derived calibration helps its own task (Bandari et al., EMNLP 2024)",
    "perplexity_predicts_damage": "Perplexity predicts the task damage",
    "nsa_drop_tracks_accuracy": "NSA's effect-weighted matched-pair drop tracks the accuracy drop",
    "nsa_neurons_causal": "NSA-matched neurons are causal: ablating them beats ablating random ones",
    "nsa_guided_recovers": "NSA-guided pruning recovers the protected category at equal sparsity",
}
VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")
COLUMNS = ["claim", "scope", "comparison", "expected", "unit", "effect", "ci_low", "ci_high", "n", "test", "p",
           "p_holm", "verdict", "resolve_n", "resolve_unit", "note"]
EXPECTED = {"negative": -1, "positive": 1, "nonzero": 0}
MCNEMAR = "exact McNemar"
BOOTSTRAP = "paired bootstrap (examples; seeds)"
PERMUTATION = "permutation (Spearman)"
README_START, README_END = "<!-- findings:start -->", "<!-- findings:end -->"
FINDINGS_SOURCE = "reports/models/claims.csv"  # the README's Findings: the study on models that can do the tasks


@dataclass(frozen=True)
class Settings:
    """The claims section of params.yaml."""

    alpha: float = 0.05
    power: float = 0.8
    bootstrap_iters: int = 9999
    seed: int = 0
    high_sparsity: float = 0.6
    design: dict | None = None  # the example-count design (reporting.power), read by the power rule


@dataclass
class Row:
    """One tested (or untestable) comparison of a claim. `factor` is a Bonferroni factor already in p (a row that
    picks the strongest of several comparisons); `se` and `n` feed the figure of how much data would resolve it."""

    claim: str
    scope: str
    comparison: str = ""
    expected: str = ""  # negative, positive or nonzero: the sign the claim predicts
    unit: str = ""
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    test: str = ""
    p: float = math.nan
    note: str = ""
    se: float = field(default=math.nan, repr=False)
    factor: int = field(default=1, repr=False)
    resolve_unit: str = "examples per dataset"


# ---------------------------------------------------------------------------------------------- the statistics


def mcnemar_p(x: Sequence[int], y: Sequence[int]) -> float:
    """Exact two-sided McNemar p of two 0/1 score lists on the same examples: the binomial test of the examples only
    x gets right among those where x and y differ (1 when they never differ)."""
    x, y = np.asarray(x), np.asarray(y)
    only_x, only_y = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    if only_x + only_y == 0:
        return 1.0
    return float(stats.binomtest(only_x, only_x + only_y, 0.5).pvalue)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided percentile bootstrap p of 'the effect is 0': twice the smaller tail share at 0, with the +1 that
    keeps it above 0 for a finite number of draws."""
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))


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


Scores = Mapping[str, Mapping[str, np.ndarray]]  # dataset -> arm -> (examples, seeds) per-example scores
Means = Mapping[tuple[str, str], np.ndarray]  # (dataset, arm) -> mean score, one value per bootstrap draw


def bootstrap_means(scores: Scores, seeds: Mapping[str, tuple], iterations: int, rng: np.random.Generator
                    ) -> tuple[Means, Means]:
    """Each arm's mean score per dataset: as measured (one value) and per bootstrap draw. Examples are resampled
    paired over every arm of a dataset; each arm's seeds (columns) are resampled too, arms with the same seed labels
    together, and the same seed draws serve every dataset (a calibration sample is shared by all datasets)."""
    labels = sorted(set(seeds.values()))
    seed_counts = {label: rng.multinomial(len(label), np.full(len(label), 1 / len(label)), size=iterations)
                   for label in labels}
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


def spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along an axis (ties get mean ranks), vectorised over the others."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx, ry = rx - rx.mean(axis=axis, keepdims=True), ry - ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def spearman_row(x: np.ndarray, y: np.ndarray, settings: Settings, rng: np.random.Generator) -> dict:
    """Spearman's rho, its permutation p (pairings; exact when all pairings fit in the iterations) and a percentile
    bootstrap interval over the points (draws without spread in x or y are left out)."""
    rho = float(spearman(x, y))
    test = stats.permutation_test((x, y), spearman, permutation_type="pairings", vectorized=True,
                                  n_resamples=settings.bootstrap_iters, rng=rng)
    picks = rng.integers(0, len(x), size=(settings.bootstrap_iters, len(x)))
    xs, ys = x[picks], y[picks]
    spread = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    values = spearman(xs[spread], ys[spread], axis=1)
    low, high = percentile_interval(values, len(values)) if len(values) else (math.nan, math.nan)
    return {"effect": rho, "ci_low": low, "ci_high": high, "p": float(test.pvalue), "n": len(x), "test": PERMUTATION,
            "unit": "Spearman rho", "resolve_unit": "variants"}


# ---------------------------------------------------------------------------------------------- the grid's data


def per_example(results: pd.DataFrame, column: str = "acc_per_example") -> pd.DataFrame:
    """Rows of the evaluation results with each example's 0/1 scores as an array."""
    return results.assign(scores=results[column].map(lambda values: np.asarray(values, dtype=np.float64)))


def arm_scores(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """dataset -> (examples, seeds) of one variant group's results (its calibration seeds in key order)."""
    out = {}
    for dataset, group in rows.groupby("dataset", sort=True):
        group = group.sort_values("calib")
        out[dataset] = np.stack(list(group["scores"]), axis=1)
    return out


def seed_labels(rows: pd.DataFrame) -> tuple:
    return tuple(sorted(set(rows["calib"])))


def datasets_of(results: pd.DataFrame, category: str) -> list[str]:
    return sorted(set(results.loc[results["category"] == category, "dataset"]))


def _grid_hint(grid: str) -> str:
    return f"grids.{grid}"


# ---------------------------------------------------------------------------------------------- the claims


def sentiment_hurt_most(results: pd.DataFrame, base_group: str, grid: str, settings: Settings,
                        floors: pd.DataFrame) -> list[Row]:
    """Per model, method and pattern (base calibration, or none), and pooled over the grid's models when it has
    several: sentiment's retained headroom minus each other category's (floor.headroom_statistic). The headroom, not
    the accuracy change, because categories differ in how far their dense accuracy is above the floor; and only above-
    floor datasets (floors: floor.floor_table), because a model at chance has nothing to lose there: each row's note
    names the datasets left out, and a scope with no sentiment dataset, or no other category, above floor is not
    tested. Sentiment is hurt most when every difference is negative: an intersection-union test whose p is the
    largest of the comparisons' p (the row shows that closest category); when some category is hurt more, the row
    shows that one, its p multiplied by the number of other categories (Bonferroni)."""
    claim = "sentiment_hurt_most"
    categories = [c for c in CATEGORIES if c in set(results["category"])]
    if "sentiment" not in categories or len(categories) < 2:
        return [Row(claim, "all", note=f"not tested: the grid has no sentiment dataset and another category beside "
                                       f"it: add both to {_grid_hint(grid)}.datasets")]
    data = per_example(results[results["protect"].isna()])
    dense = data[data["method"] == "dense"]
    pruned = data[data["method"] != "dense"].assign(calibration=lambda d: d["calib"].map(calibration_group))
    pruned = pruned[pruned["calibration"].isin([NO_CALIBRATION, base_group])]
    floor_of = {(row.model, row.dataset): (row.floor, row.at_floor) for row in floors.itertuples()}
    variant_keys = ["method", "pattern", "calibration"]
    scopes = [(f"{model} {method} {pattern} {calibration}", group) for (model, method, pattern, calibration), group
              in pruned.groupby(["model", *variant_keys], sort=True)]
    if pruned["model"].nunique() > 1:
        scopes += [(f"all {group['model'].nunique()} models {method} {pattern} {calibration}", group)
                   for (method, pattern, calibration), group in pruned.groupby(variant_keys, sort=True)]
    rows = [_hurt_most(claim, scope, group, dense, floor_of, categories, settings) for scope, group in scopes]
    return [row for row in rows if row is not None]


def _hurt_most(claim: str, scope: str, group: pd.DataFrame, dense: pd.DataFrame, floor_of: Mapping,
               categories: Sequence[str], settings: Settings) -> Row | None:
    """sentiment_hurt_most's row for one scope (one model's variant, or one variant pooled over models): each
    (model, dataset) is a unit with its own dense and pruned arms and floor; None when sentiment or every other
    category has no dense result."""
    scores, seeds, units, left = {}, {}, {c: [] for c in categories}, {c: [] for c in categories}
    pooled = group["model"].nunique() > 1
    for model, rows in group.groupby("model", sort=True):
        arms = (f"pruned {model}", f"dense {model}")
        seeds |= {arms[0]: seed_labels(rows), arms[1]: ("dense",)}
        dense_scores = arm_scores(dense[dense["model"] == model])
        for dataset, values in arm_scores(rows).items():
            if dataset not in dense_scores:
                continue
            category = rows.loc[rows["dataset"] == dataset, "category"].iloc[0]
            floor, at_floor = floor_of[model, dataset]
            if at_floor:
                left[category].append(f"{model} {dataset}" if pooled else dataset)
                continue
            scores[f"{model} {dataset}"] = {arms[0]: values, arms[1]: dense_scores[dataset]}
            units[category].append((f"{model} {dataset}", *arms, floor, len(values)))
    present = [c for c in categories if units[c] or left[c]]
    if "sentiment" not in present or len(present) < 2:
        return None
    note = "; ".join(f"{c}: {', '.join(left[c])}" for c in categories if left[c])
    note = f"left out as at floor: {note}" if note else ""
    others = [c for c in present if c != "sentiment" and units[c]]
    if not units["sentiment"] or not others:
        which = "sentiment" if not units["sentiment"] else "other category"
        return Row(claim, scope, note=f"not tested: no {which} dataset is above floor ({note}; "
                                      f"reports/tables/floor.md)")
    point, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters, row_rng(settings.seed, scope))
    gaps = {c: measure(_difference(headroom_statistic(units["sentiment"]), headroom_statistic(units[c])), point,
                       draws, settings.bootstrap_iters) for c in others}
    against = [c for c, g in gaps.items() if g["effect"] >= 0]
    if against:
        other = min(against, key=lambda c: (gaps[c]["p"], -gaps[c]["effect"]))
        factor, p = len(gaps), min(1.0, len(gaps) * gaps[other]["p"])
    else:
        other = max(gaps, key=lambda c: (gaps[c]["p"], gaps[c]["effect"]))  # ties: the smallest gap
        factor, p = 1, gaps[other]["p"]
    n = round(np.mean([unit[-1] for c in ["sentiment", *others] for unit in units[c]]))
    return Row(claim, scope, f"sentiment - {other} retained headroom (of {len(gaps)} other categories)", "negative",
               "retained headroom", n=n, test=BOOTSTRAP, factor=factor, note=note, **{**gaps[other], "p": p})


def _difference(first: Callable[[Means], np.ndarray], second: Callable[[Means], np.ndarray]
                ) -> Callable[[Means], np.ndarray]:
    return lambda means: first(means) - second(means)


def calibration_changes_result(results: pd.DataFrame, grid: str, settings: Settings) -> list[Row]:
    """Per model, method, pattern and category: every pair of calibration samples (source, format, size; seeds
    pooled) compared on the category's datasets; the row shows the pair with the smallest p, multiplied by the
    number of pairs (Bonferroni: the claim holds when any pair differs)."""
    claim = "calibration_changes_result"
    data = per_example(results[(results["method"] != "dense") & results["protect"].isna()
                               & (results["calib"] != NO_CALIBRATION)])
    data = data.assign(calibration=data["calib"].map(calibration_group))
    rows = []
    for (model, method, pattern), variant in data.groupby(["model", "method", "pattern"], sort=True):
        groups = sorted(set(variant["calibration"]))
        if len(groups) < 2:
            continue
        scores: dict = {}
        for g in groups:
            for d, s in arm_scores(variant[variant["calibration"] == g]).items():
                scores.setdefault(d, {})[g] = s
        seeds = {g: seed_labels(variant[variant["calibration"] == g]) for g in groups}
        scope = f"{model} {method} {pattern}"
        point, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters, row_rng(settings.seed, scope))
        for category in [c for c in CATEGORIES if c in set(variant["category"])]:
            datasets = datasets_of(variant, category)
            pairs = [(a, b) for a, b in itertools.combinations(groups, 2)
                     if all(a in scores[d] and b in scores[d] for d in datasets)]
            if not pairs:
                continue
            measured = {}
            for a, b in pairs:
                measured[a, b] = measure(mean_difference(datasets, a, b), point, draws, settings.bootstrap_iters)
                exact = _mcnemar_if_single(scores, datasets, a, b)
                measured[a, b] |= {"p": exact, "test": MCNEMAR} if exact is not None else {"test": BOOTSTRAP}
            (a, b), best = min(measured.items(), key=lambda item: (item[1]["p"], -abs(item[1]["effect"])))
            n = round(np.mean([len(scores[d][a]) for d in datasets]))
            strongest = f" (the strongest of {len(pairs)} pairs)" if len(pairs) > 1 else ""
            rows.append(Row(claim, f"{scope} {category}", f"{a} - {b}{strongest}",
                            "nonzero", "accuracy", n=n, factor=len(pairs),
                            **{**best, "p": min(1.0, len(pairs) * best["p"])}))
    if not rows:
        rows.append(Row(claim, "all", note=f"not tested: the grid has one calibration sample per method and pattern: "
                                           f"add a second source to {_grid_hint(grid)}.calibration.sources"))
    return rows


def _mcnemar_if_single(scores: Scores, datasets: Sequence[str], a: str, b: str) -> float | None:
    """The exact McNemar p when the comparison is one dataset, one seed a side, 0/1 scores; else None."""
    if len(datasets) != 1:
        return None
    x, y = scores[datasets[0]][a], scores[datasets[0]][b]
    if x.shape[1] != 1 or y.shape[1] != 1 or not np.isin(np.concatenate([x, y]), (0, 1)).all():
        return None
    return mcnemar_p(x[:, 0], y[:, 0])


def calibration_over_method(results: pd.DataFrame, grid: str, settings: Settings) -> list[Row]:
    """Per model, pattern at or above the high sparsity and category, over a full crossing of >= 2 calibrated methods
    and >= 2 calibration samples: the spread across calibration samples (max - min change, averaged over methods)
    minus the spread across methods (averaged over calibration samples). Positive: calibration matters more."""
    claim = "calibration_over_method"
    data = per_example(results[(results["method"] != "dense") & results["protect"].isna()
                               & (results["calib"] != NO_CALIBRATION)])
    data = data.assign(calibration=data["calib"].map(calibration_group),
                       sparsity=data["pattern"].map(lambda key: parse_pattern_key(key)[1]))
    rows = []
    for (model, pattern), variant in data[data["sparsity"] >= settings.high_sparsity].groupby(
            ["model", "pattern"], sort=True):
        crossing = variant.groupby("method")["calibration"].agg(frozenset)
        common = sorted(frozenset.intersection(*crossing)) if len(crossing) else []
        methods = sorted(crossing.index)
        if len(methods) < 2 or len(common) < 2:
            continue
        variant = variant[variant["calibration"].isin(common)].assign(
            arm=lambda d: d["method"] + " " + d["calibration"])
        scores: dict = {}
        for arm, rows_of_arm in variant.groupby("arm", sort=True):
            for d, s in arm_scores(rows_of_arm).items():
                scores.setdefault(d, {})[arm] = s
        seeds = {arm: seed_labels(r) for arm, r in variant.groupby("arm", sort=True)}
        scope = f"{model} {pattern}"
        point, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters, row_rng(settings.seed, scope))
        for category in [c for c in CATEGORIES if c in set(variant["category"])]:
            datasets = datasets_of(variant, category)

            def spread_gap(means: Means, datasets=datasets, methods=methods, common=common) -> np.ndarray:
                acc = np.stack([np.stack([sum(means[d, f"{m} {c}"] for d in datasets) / len(datasets)
                                          for c in common]) for m in methods])  # (methods, calibrations, B)
                by_calibration = (acc.max(axis=1) - acc.min(axis=1)).mean(axis=0)
                by_method = (acc.max(axis=0) - acc.min(axis=0)).mean(axis=0)
                return by_calibration - by_method

            n = round(np.mean([scores[d][next(iter(scores[d]))].shape[0] for d in datasets]))
            rows.append(Row(claim, f"{scope} {category}",
                            f"spread over {len(common)} calibration samples - spread over {len(methods)} methods",
                            "positive", "accuracy", n=n, test=BOOTSTRAP,
                            **measure(spread_gap, point, draws, settings.bootstrap_iters)))
    if not rows:
        rows.append(Row(claim, "all", note=(
            f"not tested: the grid has no calibration variation at sparsity >= {settings.high_sparsity}: add a pattern "
            f"such as {{structure: unstructured, sparsity: 0.7}} to {_grid_hint(grid)}.patterns, with two calibrated "
            f"methods in {_grid_hint(grid)}.methods and two sources in {_grid_hint(grid)}.calibration.sources")))
    return rows


def task_calibration_helps_own_task(results: pd.DataFrame, sources: Mapping[str, dict], grid: str,
                                    settings: Settings) -> list[Row]:
    """Per model, method, pattern and task-derived calibration sample whose dataset was evaluated: its accuracy on
    that dataset minus the accuracy with each other (non-task) calibration sample of the same size."""
    claim = "task_calibration_helps_own_task"
    data = per_example(results[(results["method"] != "dense") & results["protect"].isna()
                               & (results["calib"] != NO_CALIBRATION)])
    data = data.assign(calibration=data["calib"].map(calibration_group),
                       source=data["calib"].map(lambda key: parse_calibration_key(key)["source"]),
                       size=data["calib"].map(lambda key: "n{nsamples}-l{seqlen}".format(**parse_calibration_key(key))))
    evaluated = set(data["dataset"])
    own = {name: spec["dataset"] for name, spec in sources.items()
           if spec["kind"] == "task" and spec["dataset"] in evaluated}
    rows = []
    for (model, method, pattern), variant in data.groupby(["model", "method", "pattern"], sort=True):
        for task_group in sorted(set(variant.loc[variant["source"].isin(own), "calibration"])):
            task_rows = variant[variant["calibration"] == task_group]
            dataset = own[task_rows["source"].iloc[0]]
            task_rows = task_rows[task_rows["dataset"] == dataset]
            if task_rows.empty:
                continue
            others = variant[~variant["source"].isin(own) & (variant["size"] == task_rows["size"].iloc[0])
                             & (variant["dataset"] == dataset)]
            for other_group in sorted(set(others["calibration"])):
                other_rows = others[others["calibration"] == other_group]
                scores = {dataset: {"task": arm_scores(task_rows)[dataset], "other": arm_scores(other_rows)[dataset]}}
                seeds = {"task": seed_labels(task_rows), "other": seed_labels(other_rows)}
                scope = f"{model} {method} {pattern} on {dataset}: {task_group} vs {other_group}"
                point, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters, row_rng(settings.seed, scope))
                measured = measure(mean_difference([dataset], "task", "other"), point, draws, settings.bootstrap_iters)
                exact = _mcnemar_if_single(scores, [dataset], "task", "other")
                measured |= {"p": exact, "test": MCNEMAR} if exact is not None else {"test": BOOTSTRAP}
                rows.append(Row(claim, scope, f"{task_group} - {other_group}", "positive", "accuracy",
                                n=len(scores[dataset]["task"]), **measured))
    if not rows:
        rows.append(Row(claim, "all", note=(
            f"not tested: the grid has no task-derived calibration source of an evaluated dataset beside a text "
            f"source: add one (calibration_sources of kind task, e.g. strategyqa_train) to "
            f"{_grid_hint(grid)}.calibration.sources (its dataset in "
            f"{_grid_hint(grid)}.datasets) with a question-answer format (zero, single, icl) in "
            f"{_grid_hint(grid)}.calibration.formats")))
    return rows


def perplexity_predicts_damage(points: pd.DataFrame, grid: str, settings: Settings) -> list[Row]:
    """Per perplexity source and category, across pruned variants (seeds apart): Spearman's rho between the
    perplexity ratio to dense and the accuracy change. Negative: a higher perplexity, a larger drop."""
    claim = "perplexity_predicts_damage"
    rows = []
    for (source, category), group in points.groupby(["source", "category"], sort=True, observed=True):
        scope = f"{source} {category}"
        flat = _without_spread(len(group), {"perplexity ratio": group["ratio"], "accuracy change": group["acc_change"]})
        if flat:
            rows.append(Row(claim, scope, note=f"not tested: {flat}"))
            continue
        measured = spearman_row(group["ratio"].to_numpy(float), group["acc_change"].to_numpy(float), settings,
                                row_rng(settings.seed, scope))
        rows.append(Row(claim, scope, "Spearman rho of perplexity ratio vs accuracy change, across variants",
                        "negative", **measured))
    if not rows:
        rows.append(Row(claim, "all", note=f"not tested: the grid has no perplexity source: add one to "
                                           f"{_grid_hint(grid)}.perplexity_sources"))
    return rows


def _without_spread(points: int, columns: Mapping[str, pd.Series]) -> str:
    """Why a correlation cannot be computed over these points ('' when it can)."""
    if points < 3:
        return f"only {points} variants, a correlation needs 3"
    flat = [name for name, values in columns.items() if values.nunique() < 2]
    return f"the {' and the '.join(flat)} does not vary across the {points} variants" if flat else ""


def nsa_drop_tracks_accuracy(drops: pd.DataFrame | None, grid: str, settings: Settings) -> list[Row]:
    """Across (NSA dataset, pruned variant) pairs: Spearman's rho between the matched pairs' relative drop weighted
    by their dense effect (a pair that carried nothing cannot move it) and the accuracy drop (nsa.drop_table; None
    without NSA). Positive: the pairs lose more where the accuracy falls more."""
    claim = "nsa_drop_tracks_accuracy"
    if drops is None:
        return [Row(claim, "all", note=f"not tested: the grid has no NSA dataset: add one to "
                                       f"{_grid_hint(grid)}.nsa_datasets")]
    if drops.empty:
        return [Row(claim, "all", note="not tested: every NSA dataset is at floor for its model (reports/tables/"
                                       f"floor.md): add an NSA dataset the dense model does above floor to "
                                       f"{_grid_hint(grid)}.nsa_datasets")]
    scope = "all NSA datasets and variants"
    flat = _without_spread(len(drops), {"weighted matched-pair drop": drops["weighted_relative_drop"],
                                        "accuracy drop": drops["acc_drop"]})
    if flat:
        return [Row(claim, scope, note=f"not tested: {flat}")]
    measured = spearman_row(drops["weighted_relative_drop"].to_numpy(float), drops["acc_drop"].to_numpy(float),
                            settings, row_rng(settings.seed, scope))
    return [Row(claim, scope, "Spearman rho of the effect-weighted matched-pair drop vs accuracy drop, across "
                "(dataset, variant)", "positive", **measured)]


def nsa_neurons_causal(causal_paths: Iterable[str], grid: str, settings: Settings) -> list[Row]:
    """Per model, NSA dataset and ablation, at the largest K: each example's gold-margin change with the K best-
    matched neurons ablated minus its mean change over the random draws of as many neurons (draws as the second
    level). Negative: the matched neurons matter more than random ones."""
    claim = "nsa_neurons_causal"
    rows = []
    for path in sorted(map(str, causal_paths)):
        result = read_result(path, "nsa_causal")
        model = Path(path).parts[-3]
        largest = max(point["k"] for point in result["curve"])
        for point in [p for p in result["curve"] if p["k"] == largest]:
            if "per_example" not in point:
                raise ValueError(f"{path} has no per-example margin changes (made by older code), which the claims' "
                                 f"paired test needs: rerun it (snakemake --forcerun nsa_causal)")
            matched = np.asarray(point["per_example"]["matched_margin_change"], dtype=np.float64)[:, None]
            random = np.asarray(point["per_example"]["random_margin_change"], dtype=np.float64).T
            scope = f"{model} {result['dataset']} {point['ablation']} ablation, K = {largest}"
            scores = {result["dataset"]: {"matched": matched, "random": random}}
            seeds = {"matched": ("matched",), "random": tuple(f"draw {i}" for i in range(random.shape[1]))}
            point_means, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters,
                                                 row_rng(settings.seed, scope))
            rows.append(Row(claim, scope, f"matched - random ({random.shape[1]} draws) gold-margin change",
                            "negative", "nats", n=len(matched), test="paired bootstrap (examples; draws)",
                            **measure(mean_difference([result["dataset"]], "matched", "random"), point_means, draws,
                                      settings.bootstrap_iters)))
    if not rows:
        rows.append(Row(claim, "all", note=f"not tested: the grid has no NSA dataset: add one to "
                                           f"{_grid_hint(grid)}.nsa_datasets"))
    return rows


def nsa_guided_recovers(results: pd.DataFrame, guided: pd.DataFrame, grid: str, settings: Settings) -> list[Row]:
    """Per model, protected category, method, pattern and calibration (seeds paired): guided minus plain accuracy
    over the protected category's datasets. Positive: protecting the matched neurons recovered accuracy."""
    claim = "nsa_guided_recovers"
    if guided.empty:
        return [Row(claim, "all", note=f"not tested: the grid has no NSA-guided pruning: set "
                                       f"{_grid_hint(grid)}.nsa_guided.categories and methods")]
    plain = per_example(results[(results["method"] != "dense") & results["protect"].isna()])
    guided = per_example(guided).assign(calibration=lambda d: d["calib"].map(calibration_group))
    rows = []
    for (model, protect, method, pattern, calibration), group in guided.groupby(
            ["model", "protect", "method", "pattern", "calibration"], sort=True):
        ours = group[group["category"] == protect]
        theirs = plain[(plain["model"] == model) & (plain["method"] == method) & (plain["pattern"] == pattern)
                       & plain["calib"].isin(set(ours["calib"])) & plain["dataset"].isin(set(ours["dataset"]))]
        datasets = sorted(set(ours["dataset"]))
        scores = {d: {"guided": s} for d, s in arm_scores(ours).items()}
        for d, s in arm_scores(theirs).items():
            scores[d]["plain"] = s
        seeds = {"guided": seed_labels(ours), "plain": seed_labels(theirs)}  # the same samples: drawn together
        scope = f"{model} {protect} protected, {method} {pattern} {calibration}"
        point, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters, row_rng(settings.seed, scope))
        measured = measure(mean_difference(datasets, "guided", "plain"), point, draws, settings.bootstrap_iters)
        exact = _mcnemar_if_single(scores, datasets, "guided", "plain")
        measured |= {"p": exact, "test": MCNEMAR} if exact is not None else {"test": BOOTSTRAP}
        rows.append(Row(claim, scope, f"guided - plain on {protect} ({len(datasets)} dataset"
                        f"{'s' if len(datasets) > 1 else ''})", "positive",
                        "accuracy", n=round(np.mean([len(scores[d]["guided"]) for d in datasets])), **measured))
    return rows


# ---------------------------------------------------------------------------------------------- the table


def claims_table(rows: Sequence[Row], settings: Settings) -> pd.DataFrame:
    """Holm over the tested rows, then each row's verdict and, when inconclusive, how much data would resolve it."""
    tested = [row for row in rows if math.isfinite(row.p)]
    adjusted = dict(zip(map(id, tested), holm([row.p for row in tested]), strict=True)) if tested else {}
    level = settings.alpha / max(len(tested), 1)
    records = []
    for row in rows:
        record = {key: value for key, value in asdict(row).items() if key in COLUMNS}
        if id(row) not in adjusted:
            records.append(record | {"verdict": "not tested", "p_holm": math.nan, "resolve_n": None,
                                     "resolve_unit": ""})
            continue
        p_holm = float(adjusted[id(row)])
        sign = EXPECTED[row.expected]
        if p_holm < settings.alpha:
            verdict = "supported" if sign == 0 or np.sign(row.effect) == sign else "contradicted"
            resolve = None
        else:
            verdict = "inconclusive"
            alpha = level / row.factor
            resolve = (points_needed(row.effect, alpha, settings.power) if row.resolve_unit == "variants"
                       else examples_needed(row.effect, row.se, row.n, alpha, settings.power))
        records.append(record | {"p_holm": p_holm, "verdict": verdict, "resolve_n": resolve,
                                 "resolve_unit": row.resolve_unit if verdict == "inconclusive" else ""})
    table = pd.DataFrame(records, columns=COLUMNS)
    table["resolve_n"] = table["resolve_n"].astype("Int64")
    table["n"] = table["n"].astype("Int64").where(table["verdict"] != "not tested")
    return table


def all_claims(results: pd.DataFrame, guided: pd.DataFrame, perplexity_points: pd.DataFrame,
               drops: pd.DataFrame | None,
               causal_paths: Iterable[str], sources: Mapping[str, dict], base_group: str, grid: str,
               settings: Settings, floors: pd.DataFrame) -> pd.DataFrame:
    """Every claim's rows, in CLAIMS order, as one table. floors (floor.floor_table): the accuracy claims use only
    above-floor datasets (sentiment_hurt_most says which it left out; perplexity_points and drops come filtered)."""
    kept = above_floor(results, floors)
    kept_guided = above_floor(guided, floors) if len(guided) else guided
    guided_rows = nsa_guided_recovers(kept, kept_guided, grid, settings)
    if len(guided) and kept_guided.empty:
        guided_rows = [Row("nsa_guided_recovers", "all", note="not tested: every dataset of the protected categories "
                                                               "is at floor (reports/tables/floor.md)")]
    rows = (sentiment_hurt_most(results, base_group, grid, settings, floors)
            + calibration_changes_result(kept, grid, settings)
            + calibration_over_method(kept, grid, settings)
            + task_calibration_helps_own_task(kept, sources, grid, settings)
            + perplexity_predicts_damage(perplexity_points, grid, settings)
            + nsa_drop_tracks_accuracy(drops, grid, settings)
            + nsa_neurons_causal(causal_paths, grid, settings)
            + guided_rows)
    return claims_table(rows, settings)


def headline(table: pd.DataFrame, at_floor: Mapping[str, Sequence[str]] | None = None) -> dict:
    """For reports/claims.json (a DVC metric): verdict counts over the table and per claim, each row's verdict,
    effect and Holm p, and the datasets every accuracy claim left out as at floor (floor.at_floor_by_model)."""
    counts = {verdict: int((table["verdict"] == verdict).sum()) for verdict in VERDICTS}
    claims: dict = {}
    for claim in CLAIMS:
        rows = table[table["claim"] == claim]
        claims[claim] = {"counts": {v: int((rows["verdict"] == v).sum()) for v in VERDICTS}, "rows": {
            row.scope: {"verdict": row.verdict, **({} if row.verdict == "not tested" else {
                "effect": round(float(row.effect), 4), "p_holm": round(float(row.p_holm), 6)})}
            for row in rows.itertuples()}}
    return {"counts": counts, "at_floor": {model: list(datasets) for model, datasets in (at_floor or {}).items()},
            "claims": claims}


def write_claims(table: pd.DataFrame, csv_path: str, markdown_path: str, json_path: str, settings: Settings,
                 at_floor: Mapping[str, Sequence[str]] | None = None) -> None:
    """The table as CSV (every column), as Markdown (a section per claim) and its headline as JSON, atomically;
    at_floor (floor.at_floor_by_model) is named at the top of the Markdown and in the JSON."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(claims_markdown(table, settings, at_floor), encoding="utf-8")
    write_json(json_path, headline(table, at_floor))


def _number(value: float, digits: int = 3) -> str:
    return "--" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _p(value: float) -> str:
    return "--" if pd.isna(value) else f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def claims_markdown(table: pd.DataFrame, settings: Settings, at_floor: Mapping[str, Sequence[str]] | None = None
                    ) -> str:
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    tested = sum(counts[v] for v in VERDICTS[:3])
    lines = ["# Claims: what the data say", ""]
    if at_floor:
        listed = "; ".join(f"{model}: {', '.join(datasets)}" for model, datasets in at_floor.items())
        lines += [f"**Left out as at floor** (the dense model is not clearly above chance and the majority label "
                  f"there, so pruning cannot show damage; reports/tables/floor.md): {listed}. No accuracy claim "
                  f"below uses them; categories are compared by retained headroom, (pruned - floor) / "
                  f"(dense - floor).", ""]
    lines += [f"{tested} tested comparisons ({counts['supported']} supported, {counts['contradicted']} contradicted, "
              f"{counts['inconclusive']} inconclusive) and {counts['not tested']} not tested. Holm's correction over "
              f"the {tested} tests at alpha = {settings.alpha}; 95% intervals from {settings.bootstrap_iters} "
              f"bootstrap draws; 'to resolve': data at which an effect of the observed size is found at alpha / "
              f"{tested} with {settings.power:.0%} power (see prunescope.reporting.claims).", ""]
    if tested and 2 / (settings.bootstrap_iters + 1) >= settings.alpha / tested:
        lines += [f"**Too few bootstrap draws:** the smallest bootstrap p, 2 / ({settings.bootstrap_iters} + 1), is "
                  f"not below alpha / {tested}, so no bootstrap-tested row can pass Holm's first step: raise "
                  f"claims.bootstrap_iters above {math.ceil(2 * tested / settings.alpha)}.", ""]
    for claim, text in CLAIMS.items():
        rows = table[table["claim"] == claim]
        lines += [f"## {text}", ""]
        untested = rows[rows["verdict"] == "not tested"]
        lines += [f"- {row.scope}: {row.note}" for row in untested.itertuples()] + ([""] if len(untested) else [])
        rows = rows[rows["verdict"] != "not tested"]
        if len(rows):
            view = pd.DataFrame({
                "scope": rows["scope"], "comparison": rows["comparison"],
                "effect [95% CI]": [f"{_number(r.effect)} [{_number(r.ci_low)}, {_number(r.ci_high)}] {r.unit}"
                                    for r in rows.itertuples()],
                "n": rows["n"].astype(str), "test": rows["test"], "p": rows["p"].map(_p),
                "Holm p": rows["p_holm"].map(_p), "verdict": rows["verdict"],
                "to resolve": [f"{r.resolve_n} {r.resolve_unit}" if not pd.isna(r.resolve_n) else "--"
                               for r in rows.itertuples()]})
            notes = rows["note"].fillna("").astype(str)
            if (notes != "").any():
                view["note"] = notes.where(notes != "", "--").to_numpy()
            lines += [view.to_markdown(index=False)]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- README findings


def findings_markdown(table: pd.DataFrame, source: str = FINDINGS_SOURCE) -> str:
    """The README's Findings block from the claims table at `source`: per claim, its verdict counts and its most
    significant row's numbers (lowest Holm p, then p, then the largest effect), or why it was not tested."""
    lines = [f"Generated from `{source}` by `make findings`; the numbers, tests and verdicts are in "
             f"`{Path(source).with_suffix('.md').as_posix()}`.", ""]
    for claim, text in CLAIMS.items():
        rows = table[table["claim"] == claim]
        tested = rows[rows["verdict"] != "not tested"]
        if tested.empty:
            lines.append(f"- **{text}**: {'; '.join(rows['note'].fillna(''))}.")
            continue
        counts = ", ".join(f"{int((tested['verdict'] == v).sum())} {v}" for v in VERDICTS[:3])
        top = tested.assign(size=tested["effect"].abs()).sort_values(
            ["p_holm", "p", "size", "scope"], ascending=[True, True, False, True], kind="stable").iloc[0]
        resolve = (f"; {int(top.resolve_n)} {top.resolve_unit} would resolve it" if top.verdict == "inconclusive"
                   and not pd.isna(top.resolve_n) else "")
        lines.append(f"- **{text}**: {counts} of {len(tested)}. Most significant: {top.scope}, {top.comparison} = "
                     f"{_number(top.effect)} [{_number(top.ci_low)}, {_number(top.ci_high)}] {top.unit}, "
                     f"Holm p = {_p(top.p_holm)} ({top.verdict}{resolve}).")
    return "\n".join(lines) + "\n"


def readme_with_findings(readme: str, table: pd.DataFrame, source: str = FINDINGS_SOURCE) -> str:
    """The README text with the block between the findings markers replaced by findings_markdown(table, source)."""
    pattern = re.compile(re.escape(README_START) + r"\n.*?" + re.escape(README_END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {README_START} ... {README_END} block: put both markers, each on its own "
                         "line, where the findings belong")
    return pattern.sub(lambda _: f"{README_START}\n{findings_markdown(table, source)}{README_END}", readme)


def read_claims(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"note": str}, keep_default_na=True)


def main(argv: Sequence[str]) -> None:
    """`python -m prunescope.reporting.claims README.md reports/models/claims.csv`: rewrite the README's findings
    block."""
    if len(argv) != 2:
        sys.exit(f"usage: python -m prunescope.reporting.claims README.md {FINDINGS_SOURCE}")
    readme, csv_path = map(Path, argv)
    if not csv_path.exists():
        sys.exit(f"{csv_path} does not exist: run the workflow first (make run)")
    text = readme_with_findings(readme.read_text(encoding="utf-8"), read_claims(csv_path), csv_path.as_posix())
    with atomic_path(readme) as tmp:
        tmp.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
