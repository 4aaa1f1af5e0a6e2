"""The few lines a run ends with: what it found, in numbers from the reports, and where the reports are."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from prunescope.config import nsa_models
from prunescope.reporting.tables import CATEGORIES, calibration_group, studied


def grid_left_out(grid: dict) -> list[str]:
    """What a grid leaves out of its product, in words for the summary: each `exclude` entry, NSA's models."""
    lines = ["variants with " + ", ".join(f"{key} {value}" for key, value in rule.items()) for rule in grid["exclude"]]
    if grid["nsa_datasets"] and set(nsa_models(grid)) != set(grid["models"]):
        lines.append(f"NSA on {', '.join(nsa_models(grid))} only")
    return lines


def accuracy_lines(category_drop: pd.DataFrame, variants: Iterable[Sequence[str]]) -> list[str]:
    """One line per studied variant: per category its accuracy change vs dense and retained headroom over the
    above-floor datasets (or 'at floor'), and the category hurt most: the one keeping the least headroom (the
    largest drop when the table has no headroom)."""
    rows = category_drop[studied(category_drop, "calibration", variants)]
    lines = []
    for (model, method, pattern, calibration), group in rows.groupby(
            ["model", "method", "pattern", "calibration"], sort=False):
        group = group.set_index("category")
        cells = []
        for category in [c for c in CATEGORIES if c in group.index]:
            row = group.loc[category]
            if pd.isna(row["acc_change"]):
                cells.append(f"{category} at floor")
                continue
            headroom = "" if pd.isna(row["headroom"]) else f" (headroom kept {row['headroom']:.2f})"
            cells.append(f"{category} {row['acc_change']:+.3f}{headroom}")
        measured = group.dropna(subset=["acc_change"])
        by = "headroom" if measured["headroom"].notna().all() else "acc_change"
        worst = (f"{measured[by].idxmin()}" if len(measured) > 1
                 else "-- (fewer than two categories above floor)")
        lines.append(f"- {model} {method} {pattern} ({calibration}): {', '.join(cells)}; hurt most: {worst}")
    return lines


def caveat_lines(floors: pd.DataFrame, accuracy: pd.DataFrame, category_drop: pd.DataFrame,
                 variants: Iterable[Sequence[str]], where: str = "reports") -> list[str]:
    """What to know before reading a number, in words: the at-floor datasets, categories left with no dataset, the
    variants answering one label, and the category changes whose 95% interval includes zero."""
    lines = []
    floored = floors[floors["at_floor"]]
    if len(floored):
        listed = "; ".join(f"{model}: " + ", ".join(f"{row.dataset} ({row.category})" for row in group.itertuples())
                           for model, group in floored.groupby("model", sort=True))
        lines.append(f"- At floor, so pruning cannot show damage there: the dense model does not do clearly better "
                     f"than guessing or than always giving the most common answer. Every category average, headroom "
                     f"and claim below leaves them out ({listed}; {where}/tables/floor.md).")
    else:
        lines.append("- Every dataset is above floor: the dense model clearly beats guessing and the most common "
                     f"answer on each ({where}/tables/floor.md).")
    drops = category_drop[studied(category_drop, "calibration", variants)]
    empty = drops[drops["datasets"] == 0].drop_duplicates(["model", "category"])
    if len(empty):
        lines.append("- No dataset above floor, so no numbers for: " + "; ".join(
            f"{row.model} {row.category}" for row in empty.itertuples()) + ".")
    constant = _constant_answers(accuracy, variants)
    if constant:
        lines.append(f"- Answering the same choice on at least 95% of a dataset's examples (a constant answer, not "
                     f"a reading of the task): {'; '.join(constant)}.")
    measured = drops.dropna(subset=["acc_change"])
    zero = measured[measured["ci_low"].isna() | ((measured["ci_low"] <= 0) & (measured["ci_high"] >= 0))]
    if len(zero):
        cells = "; ".join(
            f"{model} {method} {pattern} ({calibration}): {', '.join(map(str, group['category']))}"
            for (model, method, pattern, calibration), group in zero.groupby(
                ["model", "method", "pattern", "calibration"], sort=False))
        lines.append(f"- These category changes are not distinguishable from no change (their 95% interval includes "
                     f"zero, or there is none): {cells}.")
    elif len(measured):
        lines.append("- Every category change below has a 95% interval that excludes zero.")
    return lines


def _constant_answers(accuracy: pd.DataFrame, variants: Iterable[Sequence[str]]) -> list[str]:
    """'model dense on dataset' and 'model method pattern (calibration) on dataset (k of S seeds)' for each constant
    answerer among the dense models and the studied variants."""
    dense = accuracy[accuracy["dense_constant"].fillna(False).astype(bool)].drop_duplicates(["model", "dataset"])
    found = [f"{row.model} dense on {row.dataset}" for row in dense.itertuples()]
    pruned = accuracy[studied(accuracy, "calibration", variants) & (accuracy["constant_seeds"].fillna(0) > 0)]
    found += [f"{row.model} {row.method} {row.pattern} ({row.calibration}) on {row.dataset} ({int(row.constant_seeds)} "
              f"of {int(row.n_seeds)} seeds)" for row in pruned.itertuples()]
    return found


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


def nsa_lines(nsa_table: pd.DataFrame, metrics: dict) -> list[str]:
    """Per NSA dataset: each variant's relative drop of the matched pairs weighted by their dense effect (the mean
    over calibration seeds; a pair that carried nothing cannot move it), whether ablating the matched neurons moves
    the answer margin beyond random neurons, and the pairing test: the share of each word group's effect its
    matched neurons carry against the controls (nsa.json, written by nsa_report)."""
    lines = []
    table = nsa_table.assign(calibration=nsa_table["calib"].map(calibration_group))
    for (model, dataset), group in table.groupby(["model", "dataset"], sort=False):
        shares = group.groupby(["method", "pattern", "calibration"], sort=False)["weighted_relative_drop"].mean()
        cells = ", ".join(f"{method} {pattern} {share:.2f}" for (method, pattern, _), share in shares.items())
        beyond = metrics["causal"].get(dataset, {}).get("mean", {}).get("beyond_random")
        verdict = "" if beyond is None else (
            "; ablating the matched neurons moves the margin beyond random ones" if beyond
            else "; ablating the matched neurons moves the margin no more than random ones")
        lines.append(f"- {model} {dataset}: matched word-neuron pairs' effect lost (weighted): {cells}{verdict}")
        for word_group, test in sorted(metrics.get("pairing", {}).get(f"{model} {dataset}", {}).items()):
            other = "none" if test["other_group"] is None else f"{test['other_group']:.2f}"
            lines.append(f"  - pairing test, {word_group} words ({test['occurrences']} occurrences, K = {test['k']}): "
                         f"their matched neurons carry {test['matched']:.2f} of their effect; random neurons of the "
                         f"same layers {test['random']:.2f}, the other groups' {other}, the most salient "
                         f"{test['important']:.2f}" + ("" if test["specific"] else " (not specific)"))
    return lines


def run_summary(grid_name: str, category_drop_csv: str, floor_csv: str, accuracy_csv: str,
                variants: Iterable[Sequence[str]], perplexity_csv: str | None, nsa_csv: str | None,
                nsa_json: str | None, left_out: Sequence[str] = ()) -> str:
    """The run's summary (markdown): first what to know before reading a number (caveat_lines, then what the grid
    leaves out of its product: grid_left_out), then headline numbers per section that the grid has, then where
    everything is."""
    read = {"keep_default_na": False, "na_values": [""]}
    variants = list(variants)
    category_drop = pd.read_csv(category_drop_csv, **read)
    where = Path(category_drop_csv).parents[1].as_posix()  # the grid's reports folder
    parts = [f"# prunescope: grid `{grid_name}`", "", "## Read this first",
             *caveat_lines(pd.read_csv(floor_csv, **read), pd.read_csv(accuracy_csv, **read), category_drop,
                           variants, where),
             *([f"- Left out of this grid for its compute budget (grids.{grid_name}): {'; '.join(left_out)}."]
               if left_out else []), "",
             "## Accuracy change vs dense (mean per category over its above-floor datasets; headroom kept: (pruned - "
             f"floor) / (dense - floor), 1 = nothing lost; 95% CIs in {where}/tables/category_drop.md)",
             *accuracy_lines(category_drop, variants)]
    if perplexity_csv:
        parts += ["", f"## Perplexity ({where}/tables/perplexity.md)",
                  *perplexity_lines(pd.read_csv(perplexity_csv, **read), variants)]
    if nsa_csv and nsa_json:
        parts += ["", f"## Neuron Semantic Attribution ({where}/tables/nsa.md)",
                  *nsa_lines(pd.read_csv(nsa_csv, **read), json.loads(Path(nsa_json).read_text()))]
    parts += ["", "## Where the results are",
              f"- tables: {where}/tables/*.md (and .csv); which datasets are at floor: {where}/tables/floor.md",
              f"- figures: {where}/figures/ (png and svg)",
              f"- headline metrics: {where}/metrics.json (`dvc metrics show`)",
              f"- every claim of the study, its test and verdict: {where}/claims.md (counts in {where}/claims.json)",
              f"- one HTML report of every table and figure: `make report` (after this run) -> {where}/report.html"]
    return "\n".join(parts) + "\n"
