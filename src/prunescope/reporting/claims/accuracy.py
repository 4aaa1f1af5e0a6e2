"""The claims tested on accuracy, each a paired bootstrap (or exact McNemar) of variants on the same examples:
sentiment hurt most, the calibration data's effect (three claims) and NSA-guided pruning's recovery."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from prunescope.config import NO_CALIBRATION, parse_calibration_key, parse_pattern_key
from prunescope.reporting.claims.rows import BOOTSTRAP, MCNEMAR, Row, Settings, grid_hint
from prunescope.reporting.floor import headroom_statistic
from prunescope.reporting.statistics import (
    Means,
    Scores,
    bootstrap_means,
    difference,
    mcnemar_p,
    mean_difference,
    measure,
    row_rng,
)
from prunescope.reporting.tables import CATEGORIES, calibration_group

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
                                       f"it: add both to {grid_hint(grid)}.datasets")]
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
    gaps = {c: measure(difference(headroom_statistic(units["sentiment"]), headroom_statistic(units[c])), point,
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
                                           f"add a second source to {grid_hint(grid)}.calibration.sources"))
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
            f"such as {{structure: unstructured, sparsity: 0.7}} to {grid_hint(grid)}.patterns, with two calibrated "
            f"methods in {grid_hint(grid)}.methods and two sources in {grid_hint(grid)}.calibration.sources")))
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
            f"{grid_hint(grid)}.calibration.sources (its dataset in "
            f"{grid_hint(grid)}.datasets) with a question-answer format (zero, single, icl) in "
            f"{grid_hint(grid)}.calibration.formats")))
    return rows


def nsa_guided_recovers(results: pd.DataFrame, guided: pd.DataFrame, grid: str, settings: Settings) -> list[Row]:
    """Per model, protected category, method, pattern and calibration (seeds paired): guided minus plain accuracy
    over the protected category's datasets. Positive: protecting the matched neurons recovered accuracy."""
    claim = "nsa_guided_recovers"
    if guided.empty:
        return [Row(claim, "all", note=f"not tested: the grid has no NSA-guided pruning: set "
                                       f"{grid_hint(grid)}.nsa_guided.categories and methods")]
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
