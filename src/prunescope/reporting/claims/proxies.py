"""The claims about signs of the damage other than accuracy: perplexity and NSA's matched-pair drop (Spearman's rho
across variants) and NSA's causal check (matched against random ablations, a paired bootstrap)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from prunescope.io import read_result
from prunescope.reporting.claims.rows import PERMUTATION, Row, Settings, grid_hint
from prunescope.reporting.statistics import bootstrap_means, mean_difference, measure, row_rng, spearman_test


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
        measured = _spearman_row(group["ratio"].to_numpy(float), group["acc_change"].to_numpy(float), settings, scope)
        rows.append(Row(claim, scope, "Spearman rho of perplexity ratio vs accuracy change, across variants",
                        "negative", **measured))
    if not rows:
        rows.append(Row(claim, "all", note=f"not tested: the grid has no perplexity source: add one to "
                                           f"{grid_hint(grid)}.perplexity_sources"))
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
                                       f"{grid_hint(grid)}.nsa_datasets")]
    if drops.empty:
        return [Row(claim, "all", note="not tested: every NSA dataset is at floor for its model (reports/tables/"
                                       f"floor.md): add an NSA dataset the dense model does above floor to "
                                       f"{grid_hint(grid)}.nsa_datasets")]
    scope = "all NSA datasets and variants"
    flat = _without_spread(len(drops), {"weighted matched-pair drop": drops["weighted_relative_drop"],
                                        "accuracy drop": drops["acc_drop"]})
    if flat:
        return [Row(claim, scope, note=f"not tested: {flat}")]
    measured = _spearman_row(drops["weighted_relative_drop"].to_numpy(float), drops["acc_drop"].to_numpy(float),
                             settings, scope)
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
                                           f"{grid_hint(grid)}.nsa_datasets"))
    return rows


def _spearman_row(x: np.ndarray, y: np.ndarray, settings: Settings, scope: str) -> dict:
    """A correlation row's numbers (statistics.spearman_test) and its units: the data that would resolve it is
    counted in variants."""
    return {**spearman_test(x, y, settings.bootstrap_iters, row_rng(settings.seed, scope)), "test": PERMUTATION,
            "unit": "Spearman rho", "resolve_unit": "variants"}
