"""The few lines a run ends with: what it found, in numbers from the reports, and where the reports are."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from prunescope.reporting.tables import CATEGORIES, calibration_group, studied


def accuracy_lines(category_drop: pd.DataFrame, variants: Iterable[Sequence[str]]) -> list[str]:
    """One line per studied variant: its accuracy change vs dense per category and the category hurt most."""
    rows = category_drop[studied(category_drop, "calibration", variants)]
    lines = []
    for (model, method, pattern, calibration), group in rows.groupby(
            ["model", "method", "pattern", "calibration"], sort=False):
        change = group.set_index("category")["acc_change"]
        cells = ", ".join(f"{category} {change[category]:+.3f}" for category in CATEGORIES if category in change)
        lines.append(f"- {model} {method} {pattern} ({calibration}): {cells}; hurt most: {change.idxmin()}")
    return lines


def perplexity_lines(perplexity: pd.DataFrame, variants: Iterable[Sequence[str]]) -> list[str]:
    """One line per model and source: the dense perplexity, then each studied variant's as a multiple of it (the
    mean over calibration seeds)."""
    pruned = perplexity[studied(perplexity, "calib", variants) & perplexity["protect"].isna()]
    pruned = pruned.assign(calibration=pruned["calib"].map(calibration_group))
    lines = []
    for dense in perplexity[perplexity["method"] == "dense"].itertuples():
        ratios = (pruned[(pruned["model"] == dense.model) & (pruned["source"] == dense.source)]
                  .groupby(["method", "pattern", "calibration"], sort=False)["ratio"].mean())
        cells = ", ".join(f"{method} {pattern} x{ratio:.2f}" for (method, pattern, _), ratio in ratios.items())
        lines.append(f"- {dense.model} on {dense.source}: dense {dense.perplexity:.1f}; pruned / dense: {cells}")
    return lines


def nsa_lines(nsa_table: pd.DataFrame, causal: dict) -> list[str]:
    """Per NSA dataset: each variant's share of matched neurons that lost their word (the mean over calibration
    seeds), and whether ablating the matched neurons moves the answer margin beyond random neurons."""
    lines = []
    table = nsa_table.assign(calibration=nsa_table["calib"].map(calibration_group))
    for (model, dataset), group in table.groupby(["model", "dataset"], sort=False):
        shares = group.groupby(["method", "pattern", "calibration"], sort=False)["fraction_dropped"].mean()
        cells = ", ".join(f"{method} {pattern} {share:.2f}" for (method, pattern, _), share in shares.items())
        beyond = causal.get(dataset, {}).get("mean", {}).get("beyond_random")
        verdict = "" if beyond is None else (
            "; ablating the matched neurons moves the margin beyond random ones" if beyond
            else "; ablating the matched neurons moves the margin no more than random ones")
        lines.append(f"- {model} {dataset}: share of matched neurons that lost their word: {cells}{verdict}")
    return lines


def run_summary(grid_name: str, category_drop_csv: str, variants: Iterable[Sequence[str]],
                perplexity_csv: str | None, nsa_csv: str | None, nsa_json: str | None) -> str:
    """The run's summary (markdown): headline numbers per section that the grid has, then where everything is."""
    read = {"keep_default_na": False, "na_values": [""]}
    parts = [f"# prunescope: grid `{grid_name}`", "",
             "## Accuracy change vs dense (mean per category; 95% CIs in reports/tables/category_drop.md)",
             *accuracy_lines(pd.read_csv(category_drop_csv, **read), variants)]
    if perplexity_csv:
        parts += ["", "## Perplexity (reports/tables/perplexity.md)",
                  *perplexity_lines(pd.read_csv(perplexity_csv, **read), variants)]
    if nsa_csv and nsa_json:
        causal = json.loads(Path(nsa_json).read_text())["causal"]
        parts += ["", "## Neuron Semantic Attribution (reports/tables/nsa.md)",
                  *nsa_lines(pd.read_csv(nsa_csv, **read), causal)]
    parts += ["", "## Where the results are",
              "- tables: reports/tables/*.md (and .csv)",
              "- figures: reports/figures/ (png and svg)",
              "- headline metrics: reports/metrics.json (`dvc metrics show`)",
              "- every claim of the study with its test and verdict: reports/claims.md (counts in reports/claims.json)",
              "- one HTML report of every table and figure: `make report` -> reports/report.html"]
    return "\n".join(parts) + "\n"
