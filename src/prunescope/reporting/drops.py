"""The category_drop table: per pruned variant and task category, the mean accuracy change vs dense over the
category's datasets, with a 95% percentile bootstrap confidence interval over examples and calibration seeds.

Each bootstrap iteration resamples, with replacement, every dataset's examples (the same indices for the dense
and every pruned result: the comparison is paired) and the variant's calibration seeds, then recomputes the
category's mean change. Counts of correct examples are integers, so identical dense and pruned scores give a
change of exactly 0 in every iteration. The resampling draws counts over the distinct per-example score rows
(see statistics.resample_examples), so its cost does not grow with the number of examples.

Given the floor table (reporting.floor), a category is measured on its above-floor datasets only (the rest are named
in left_out: a model at chance there has no accuracy left to lose, and a flipped constant answer reads as a gain),
and each row adds the retained headroom, (pruned - floor) / (dense - floor), averaged over those datasets, with its
interval from the same bootstrap draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prunescope.reporting.statistics import mean_draws, percentile_interval, resample_seeds, row_rng
from prunescope.reporting.tables import (
    CATEGORIES,
    VARIANT_KEYS,
    calibration_group,
    write_csv,
    write_latex,
    write_markdown,
)

KEYS = ["model", *VARIANT_KEYS, "category"]
COLUMNS = [*KEYS, "datasets", "left_out", "seeds", "n_examples", "dense_acc", "acc_mean", "acc_change", "ci_low",
           "ci_high", "headroom", "headroom_low", "headroom_high"]
RERUN = "snakemake --forcerun evaluate_dense evaluate_pruned"


class MissingPerExampleError(ValueError):
    """A result file without per-example scores (made before they were recorded): it cannot be bootstrapped."""


def category_drop_table(results: pd.DataFrame, iterations: int, seed: int, floors: pd.DataFrame | None = None
                        ) -> pd.DataFrame:
    """One row per (model, method, pattern, calibration without seed, category) of the pruned results.

    results is load_results' frame (dense rows included; NSA-guided rows are left out). acc_change is the mean
    over the category's datasets of (mean over seeds of the pruned accuracy - dense accuracy); ci_low and
    ci_high bound its 95% percentile bootstrap interval over `iterations` resamples (NaN for 0 iterations, as
    evaluation.bootstrap_iters 0 skips lm-eval's stderrs). Each row draws from its own
    generator, seeded by `seed` and the row's keys, so a row's interval does not depend on the other rows.
    floors, reporting.floor.floor_table's frame: its at-floor datasets are left out (named in left_out; a category
    with none left gets a row of NaN with datasets 0) and the retained headroom is measured; None: every dataset
    counts and the headroom columns are NaN.
    """
    if iterations < 0:
        raise ValueError(f"bootstrap iterations must be >= 0, got {iterations}")
    if "protect" in results:
        results = results[results["protect"].isna()]
    _check_per_example(results)
    dense = {(row.model, row.dataset): np.asarray(row.acc_per_example, dtype=np.int64)
             for row in results[results["method"] == "dense"].itertuples()}
    floor_of, at_floor = {}, set()
    if floors is not None:
        floor_of = {(row.model, row.dataset): row.floor for row in floors.itertuples()}
        at_floor = {(row.model, row.dataset) for row in floors.itertuples() if row.at_floor}
    pruned = results[results["method"] != "dense"].assign(calibration=lambda d: d["calib"].map(calibration_group))
    rows = []
    for key, group in pruned.groupby(KEYS, sort=True):
        key = dict(zip(KEYS, key, strict=True))
        floored = group["dataset"].map(lambda d, model=key["model"]: (model, d) in at_floor)
        left_out = ", ".join(sorted(set(group.loc[floored, "dataset"])))
        if floored.all():
            rows.append({**key, "datasets": 0, "left_out": left_out, "seeds": group["calib"].nunique()})
            continue
        kept = group[~floored]
        floor = {d: floor_of[key["model"], d] for d in set(kept["dataset"])} if floors is not None else None
        rows.append({**_bootstrap_row(key, kept, dense, floor, iterations, seed), "left_out": left_out})
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _check_per_example(results: pd.DataFrame) -> None:
    """Every result must carry per-example scores that agree with its accuracy."""
    for row in results.itertuples():
        scores = row.acc_per_example
        if not isinstance(scores, list):
            raise MissingPerExampleError(
                f"{row.path} has no per-example scores (metrics.per_example), which the bootstrap confidence "
                f"intervals need: it was made by older code; rerun the evaluate rules: {RERUN}")
        if len(scores) != row.n_examples or abs(sum(scores) / max(len(scores), 1) - row.acc) > 1e-9:
            raise MissingPerExampleError(
                f"{row.path}: its {len(scores)} per-example scores do not match n = {row.n_examples}, "
                f"acc = {row.acc}; rerun the evaluate rules: {RERUN}")


def _bootstrap_row(key: dict, group: pd.DataFrame, dense: dict, floor: dict | None, iterations: int, seed: int
                   ) -> dict:
    """Point estimate and bootstrap interval of one variant's mean accuracy change on one category, and of its mean
    retained headroom when the datasets' floors are given."""
    seeds = sorted(set(group["calib"]))
    datasets = sorted(set(group["dataset"]))
    scores = group.set_index(["dataset", "calib"])["acc_per_example"]
    if len(scores) != len(seeds) * len(datasets) or scores.index.duplicated().any():
        raise ValueError(f"{_name(key)}: expected one result per dataset {datasets} and calibration seed {seeds}")
    rng = row_rng(seed, _name(key))
    n_seeds = len(seeds)
    seed_counts = resample_seeds(n_seeds, iterations, rng)
    point, draws, kept, kept_draws, dense_accs, pruned_accs, n_examples = [], [], [], [], [], [], 0
    for dataset in datasets:
        if (key["model"], dataset) not in dense:
            raise ValueError(f"{_name(key)}: no dense result for dataset {dataset}")
        rows = [dense[key["model"], dataset]] + [np.asarray(scores[dataset, calib], dtype=np.int64) for calib in seeds]
        n = len(rows[0])
        if any(len(row) != n for row in rows):
            raise ValueError(f"{_name(key)}, dataset {dataset}: the dense and pruned results scored different "
                             f"numbers of examples ({[len(row) for row in rows]})")
        matrix = np.stack(rows, axis=1)  # (n, 1 + S): dense, then each seed's pruned result, per example
        correct = matrix.sum(axis=0)
        dense_accs.append(correct[0] / n)
        pruned_accs.append(correct[1:].mean() / n)
        point.append((correct[1:].sum() - n_seeds * correct[0]) / (n_seeds * n))
        baseline, variant = mean_draws(matrix, 1, seed_counts, rng)
        draws.append(variant - baseline)
        if floor is not None:
            kept.append(retained_headroom(pruned_accs[-1], dense_accs[-1], floor[dataset], n))
            kept_draws.append(retained_headroom(variant, baseline, floor[dataset], n))
        n_examples += n
    low, high = percentile_interval(np.mean(draws, axis=0), iterations)
    headroom = {}
    if floor is not None:
        headroom_low, headroom_high = percentile_interval(np.mean(kept_draws, axis=0), iterations)
        headroom = {"headroom": float(np.mean(kept)), "headroom_low": headroom_low, "headroom_high": headroom_high}
    return {**key, "datasets": len(datasets), "seeds": n_seeds, "n_examples": n_examples,
            "dense_acc": float(np.mean(dense_accs)), "acc_mean": float(np.mean(pruned_accs)),
            "acc_change": float(np.mean(point)), "ci_low": float(low), "ci_high": float(high), **headroom}


def retained_headroom(pruned, dense, floor: float, n: int):
    """(pruned - floor) / (dense - floor): 1 when pruning kept everything the dense model had above its floor, 0 when
    it fell to the floor, negative below it. Works on arrays of bootstrap draws too; a draw whose dense accuracy falls
    to the floor counts one example's worth of headroom (1 / n), so the ratio stays finite (the floor table admits
    only datasets where the dense model is clearly above its floor, so such draws are rare)."""
    return (pruned - floor) / np.maximum(dense - floor, 1 / n)


def _name(key: dict) -> str:
    return " ".join(str(key[k]) for k in KEYS)


def write_category_drop(table: pd.DataFrame, csv_path: str, markdown_path: str, latex_path: str,
                        iterations: int) -> None:
    """CSV (every column, 4 decimals), and Markdown and LaTeX views (3 decimals, the interval in one column)."""
    write_csv(table, csv_path)
    view = _view(table)
    title = (f"Accuracy change vs dense by task category: mean over the category's datasets (seeds averaged), "
             f"95% percentile bootstrap CI over examples and calibration seeds ({iterations} iterations). Retained "
             f"headroom: (pruned - floor) / (dense - floor), floor = max(chance, majority-label rate), 1 = nothing "
             f"lost, 0 = down to the floor. Datasets at floor (the dense model not clearly above chance and the "
             f"majority label, reports/tables/floor.md) are left out and named.")
    write_markdown(view, markdown_path, title)
    write_latex(view, latex_path)


def _view(table: pd.DataFrame) -> pd.DataFrame:
    def interval(lows, highs) -> list[str]:
        return ["--" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]" for low, high in zip(lows, highs, strict=True)]

    left_out = table["left_out"].fillna("").astype(str)
    return pd.DataFrame({
        **{key: table[key] for key in KEYS}, "datasets": table["datasets"],
        "left out (at floor)": left_out.where(left_out != "", "--"), "seeds": table["seeds"],
        "dense": table["dense_acc"], "pruned": table["acc_mean"], "change": table["acc_change"],
        "95% CI": interval(table["ci_low"], table["ci_high"]), "retained headroom": table["headroom"],
        "headroom 95% CI": interval(table["headroom_low"], table["headroom_high"])})
