"""The category_drop table: per pruned variant and task category, the mean accuracy change vs dense over the
category's datasets, with a 95% percentile bootstrap confidence interval over examples and calibration seeds.

Each bootstrap iteration resamples, with replacement, every dataset's examples (the same indices for the dense
and every pruned result: the comparison is paired) and the variant's calibration seeds, then recomputes the
category's mean change. Counts of correct examples are integers, so identical dense and pruned scores give a
change of exactly 0 in every iteration. The resampling draws counts over the distinct per-example score rows
(see resample_examples), so its cost does not grow with the number of examples.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from prunescope.reporting.tables import (
    CATEGORIES,
    VARIANT_KEYS,
    calibration_group,
    write_csv,
    write_latex,
    write_markdown,
)

KEYS = ["model", *VARIANT_KEYS, "category"]
COLUMNS = [*KEYS, "datasets", "seeds", "n_examples", "dense_acc", "acc_mean", "acc_change", "ci_low", "ci_high"]
CONFIDENCE = 0.95
RERUN = "snakemake --forcerun evaluate_dense evaluate_pruned"


class MissingPerExampleError(ValueError):
    """A result file without per-example scores (made before they were recorded): it cannot be bootstrapped."""


def category_drop_table(results: pd.DataFrame, iterations: int, seed: int) -> pd.DataFrame:
    """One row per (model, method, pattern, calibration without seed, category) of the pruned results.

    results is load_results' frame (dense rows included; NSA-guided rows are left out). acc_change is the mean
    over the category's datasets of (mean over seeds of the pruned accuracy - dense accuracy); ci_low and
    ci_high bound its 95% percentile bootstrap interval over `iterations` resamples (NaN for 0 iterations, as
    evaluation.bootstrap_iters 0 skips lm-eval's stderrs). Each row draws from its own
    generator, seeded by `seed` and the row's keys, so a row's interval does not depend on the other rows.
    """
    if iterations < 0:
        raise ValueError(f"bootstrap iterations must be >= 0, got {iterations}")
    if "protect" in results:
        results = results[results["protect"].isna()]
    _check_per_example(results)
    dense = {(row.model, row.dataset): np.asarray(row.acc_per_example, dtype=np.int64)
             for row in results[results["method"] == "dense"].itertuples()}
    pruned = results[results["method"] != "dense"].assign(calibration=lambda d: d["calib"].map(calibration_group))
    rows = []
    for key, group in pruned.groupby(KEYS, sort=True):
        rows.append(_bootstrap_row(dict(zip(KEYS, key, strict=True)), group, dense, iterations, seed))
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


def _bootstrap_row(key: dict, group: pd.DataFrame, dense: dict, iterations: int, seed: int) -> dict:
    """Point estimate and bootstrap interval of one variant's mean accuracy change on one category."""
    seeds = sorted(set(group["calib"]))
    datasets = sorted(set(group["dataset"]))
    scores = group.set_index(["dataset", "calib"])["acc_per_example"]
    if len(scores) != len(seeds) * len(datasets) or scores.index.duplicated().any():
        raise ValueError(f"{_name(key)}: expected one result per dataset {datasets} and calibration seed {seeds}")
    rng = row_rng(seed, _name(key))
    n_seeds = len(seeds)
    seed_counts = resample_seeds(n_seeds, iterations, rng)
    point, draws, dense_accs, pruned_accs, n_examples = [], [], [], [], 0
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
        draws.append(change_draws(matrix, 1, seed_counts, rng))
        n_examples += n
    low, high = percentile_interval(np.mean(draws, axis=0), iterations)
    return {**key, "datasets": len(datasets), "seeds": n_seeds, "n_examples": n_examples,
            "dense_acc": float(np.mean(dense_accs)), "acc_mean": float(np.mean(pruned_accs)),
            "acc_change": float(np.mean(point)), "ci_low": float(low), "ci_high": float(high)}


def row_rng(seed: int, name: str) -> np.random.Generator:
    """A table row's own generator, seeded by `seed` and the row's name: its interval does not depend on the
    other rows."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def resample_seeds(n_seeds: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """(iterations, seeds): how often each calibration seed is drawn in each bootstrap iteration."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=iterations)


def change_draws(matrix: np.ndarray, baselines: int, seed_counts: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """Per iteration: the mean over resampled seeds of (variant - baseline) accuracy on one dataset.

    matrix (examples, baselines + seeds) holds 0/1 scores: one baseline column shared by every seed (dense) or one
    per seed (plain pruning, against NSA-guided), then one column per seed. Examples are resampled paired over all
    columns; each iteration's change is one exact integer ratio."""
    n_seeds, n = seed_counts.shape[1], len(matrix)
    resampled = resample_examples(matrix, len(seed_counts), rng)  # (B, baselines + S) correct counts
    return (seed_counts * (resampled[:, baselines:] - resampled[:, :baselines])).sum(axis=1) / (n_seeds * n)


def percentile_interval(changes: np.ndarray, iterations: int) -> tuple[float, float]:
    """The 95% percentile interval of the bootstrap changes (NaN for 0 iterations)."""
    if not iterations:
        return np.nan, np.nan
    low, high = np.quantile(changes, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def resample_examples(matrix: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Per iteration, the correct counts of each column over n examples drawn with replacement (same draws for
    every column: paired). Examples with the same 0/1 row are interchangeable, so drawing n rows is drawing
    multinomial counts over the distinct rows, weighted by how often each occurs: the same distribution as
    resampling indices, at a cost that does not grow with n (at most 2^(1 + S) distinct rows)."""
    patterns, counts = np.unique(matrix, axis=0, return_counts=True)
    drawn = rng.multinomial(len(matrix), counts / len(matrix), size=iterations)  # (B, distinct rows)
    return drawn @ patterns


def _name(key: dict) -> str:
    return " ".join(str(key[k]) for k in KEYS)


def write_category_drop(table: pd.DataFrame, csv_path: str, markdown_path: str, latex_path: str,
                        iterations: int) -> None:
    """CSV (every column, 4 decimals), and Markdown and LaTeX views (3 decimals, the interval in one column)."""
    write_csv(table, csv_path)
    view = _view(table)
    title = (f"Accuracy change vs dense by task category: mean over the category's datasets (seeds averaged), "
             f"95% percentile bootstrap CI over examples and calibration seeds ({iterations} iterations).")
    write_markdown(view, markdown_path, title)
    write_latex(view, latex_path)


def _view(table: pd.DataFrame) -> pd.DataFrame:
    interval = ["--" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]"
                for low, high in zip(table["ci_low"], table["ci_high"], strict=True)]
    return (table.drop(columns=["ci_low", "ci_high", "n_examples"]).assign(ci=interval)
            .rename(columns={"dense_acc": "dense", "acc_mean": "pruned", "acc_change": "change", "ci": "95% CI"}))
