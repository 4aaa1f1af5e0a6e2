"""The claims about signs of the damage other than accuracy: perplexity and NSA's matched-pair drop (Spearman's rho
across variants) and the causal test of NSA's pairing (matched against random neurons, a paired bootstrap)."""

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
    """The causal test of the pairing (nsa.pairing), per model, NSA dataset and word group, at the largest K: on
    each of the group's patched occurrences, the joint mediated effect of its K best-matched neurons minus that of
    as many random neurons of the same layers (nats, oriented by the word's effect; the draws as the second level).
    Positive: the neurons NSA paired with the words carry more of their effect than neurons of the same layers."""
    claim = "nsa_neurons_causal"
    rows, unpaired = [], []
    for path in sorted(map(str, causal_paths)):
        result = read_result(path, "nsa_causal")
        model = Path(path).parts[-3]
        if "pairing" not in result:
            raise ValueError(f"{path} has no pairing test (made by older code), which this claim tests: rerun it "
                             "(snakemake --forcerun nsa_causal)")
        if not result["pairing"]:
            unpaired.append(f"{model} {result['dataset']}")
            continue
        for group, test in sorted(result["pairing"].items()):
            point = test["curve"][-1]
            matched = np.asarray(point["per_occurrence"]["matched"], dtype=np.float64)[:, None]
            random = np.asarray(point["per_occurrence"]["random"], dtype=np.float64).T
            scope = f"{model} {result['dataset']} {group} words, K = {point['k']}"
            scores = {result["dataset"]: {"matched": matched, "random": random}}
            seeds = {"matched": ("matched",), "random": tuple(f"draw {i}" for i in range(random.shape[1]))}
            point_means, draws = bootstrap_means(scores, seeds, settings.bootstrap_iters,
                                                 row_rng(settings.seed, scope))
            rows.append(Row(claim, scope, f"matched - random ({random.shape[1]} draws) joint mediated effect on the "
                            "group's word occurrences", "positive", "nats", n=len(matched),
                            test="paired bootstrap (occurrences; draws)",
                            **measure(mean_difference([result["dataset"]], "matched", "random"), point_means, draws,
                                      settings.bootstrap_iters)))
    if not rows:
        why = (f"no word group of {', '.join(unpaired)} has matched neurons (or nsa.matching is paper): lower "
               "nsa.share_floor or nsa.effect_floor, or raise the grid's nsa_examples") if unpaired else (
               f"the grid has no NSA dataset: add one to {grid_hint(grid)}.nsa_datasets")
        rows.append(Row(claim, "all", note=f"not tested: {why}"))
    return rows


def _spearman_row(x: np.ndarray, y: np.ndarray, settings: Settings, scope: str) -> dict:
    """A correlation row's numbers (statistics.spearman_test) and its units: the data that would resolve it is
    counted in variants."""
    return {**spearman_test(x, y, settings.bootstrap_iters, row_rng(settings.seed, scope)), "test": PERMUTATION,
            "unit": "Spearman rho", "resolve_unit": "variants"}
