"""Perplexity tables (dense beside every variant, the ratio to dense) and whether the perplexity ratio predicts the
accuracy damage per task category across variants (Spearman and Pearson), as a table, a figure and headline metrics."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import seaborn as sns

from prunescope.reporting.figures import plt, save_figure, set_style
from prunescope.reporting.sweeps import accuracy_changes
from prunescope.reporting.tables import CATEGORIES, current_result, write_csv, write_markdown

VARIANT = ["model", "method", "pattern", "calib", "protect"]


def load_perplexity(paths: Iterable[str], expected_params: dict, pruning: dict) -> pd.DataFrame:
    """One row per perplexity result; stale ones (other perplexity params, other pruning options) are refused."""
    rows = []
    for path in paths:
        result = current_result(path, "perplexity", expected_params, pruning)
        rows.append({**{key: result.get(key) for key in VARIANT}, "source": result["source"],
                     **{key: result["metrics"][key] for key in ("perplexity", "windows", "seqlen", "tokens")}})
    return pd.DataFrame(rows, columns=[*VARIANT, "source", "perplexity", "windows", "seqlen", "tokens"])


def perplexity_table(perplexity: pd.DataFrame) -> pd.DataFrame:
    """Every variant's perplexity per source beside its model's dense perplexity, and the ratio pruned / dense (the
    dense rows have ratio 1)."""
    dense = (perplexity[perplexity["method"] == "dense"].set_index(["model", "source"])["perplexity"]
             .rename("dense_perplexity"))
    table = perplexity.join(dense, on=["model", "source"])
    table["ratio"] = table["perplexity"] / table["dense_perplexity"]
    order = table.assign(is_dense=table["method"] != "dense").sort_values(
        ["model", "source", "is_dense", "method", "pattern", "calib", "protect"], kind="stable", na_position="first")
    return order.drop(columns="is_dense").reset_index(drop=True)


def perplexity_markdown(table: pd.DataFrame, path: str) -> None:
    """One row per model variant, one column per source: perplexity (ratio to dense)."""
    cell = table["perplexity"].map("{:.2f}".format) + " (x" + table["ratio"].map("{:.2f}".format) + ")"
    view = table.assign(cell=cell, protect=table["protect"].fillna("")).pivot_table(
        index=VARIANT, columns="source", values="cell", aggfunc="first", sort=False, dropna=False).reset_index()
    view = view.rename_axis(columns=None).dropna(axis=0, how="all", subset=list(table["source"].unique()))
    write_markdown(view, path, "Perplexity per source: each variant's perplexity (its ratio to the dense model's); "
                   "protect: the category whose NSA-matched neurons NSA-guided pruning kept.")


def variant_points(table: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """One row per (pruned variant, source, category): its perplexity ratio and its accuracy change vs dense averaged
    over the category's datasets (NSA-guided variants are left out, as in the accuracy tables)."""
    changes = accuracy_changes(results)
    per_category = (changes.groupby(["model", "method", "pattern", "calib", "category"], observed=True)["acc_change"]
                    .mean().reset_index())
    pruned = table[(table["method"] != "dense") & table["protect"].isna()]
    return pruned.merge(per_category, on=["model", "method", "pattern", "calib"], how="inner")


def correlation_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per source and category, across variants: n, and the Pearson and Spearman correlation between the
    perplexity ratio and the accuracy change (empty with fewer than 3 variants or no spread). A perplexity that
    predicts the damage gives negative values: a higher ratio, a larger drop."""
    rows = []
    for (source, category), group in points.groupby(["source", "category"], observed=True, sort=False):
        enough = len(group) >= 3 and group["ratio"].nunique() > 1 and group["acc_change"].nunique() > 1
        rows.append({"source": source, "category": category, "n": len(group),
                     **{method: group["ratio"].corr(group["acc_change"], method=method) if enough else None
                        for method in ("pearson", "spearman")}})
    table = pd.DataFrame(rows, columns=["source", "category", "n", "pearson", "spearman"])
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(["source", "category"], kind="stable").reset_index(drop=True)


def write_perplexity_tables(table: pd.DataFrame, correlation: pd.DataFrame, csv_path: str, markdown_path: str,
                            correlation_csv: str, correlation_markdown: str) -> None:
    write_csv(table, csv_path)
    perplexity_markdown(table, markdown_path)
    write_csv(correlation, correlation_csv)
    write_markdown(correlation, correlation_markdown,
                   "Across pruned variants, per perplexity source and task category: the correlation between the "
                   "perplexity ratio (pruned / dense) and the mean accuracy change vs dense (negative: perplexity "
                   "predicts the damage); n variants.")


def perplexity_headline(table: pd.DataFrame, correlation: pd.DataFrame) -> dict:
    """For reports/metrics.json: per model and source the dense perplexity and each variant's perplexity and ratio;
    per source and category the correlation with the accuracy change."""
    metrics: dict = {}
    for row in table.itertuples():
        entry = metrics.setdefault(row.model, {}).setdefault(row.source, {})
        if row.method == "dense":
            entry["dense"] = round(float(row.perplexity), 4)
            continue
        name = "_".join([*([f"guided-{row.protect}"] if isinstance(row.protect, str) else []), row.method,
                         row.pattern, row.calib])
        entry[name] = {"perplexity": round(float(row.perplexity), 4), "ratio": round(float(row.ratio), 4)}
    correlations = {f"{row.source}/{row.category}": {
        "n": int(row.n), **{key: None if pd.isna(value) else round(float(value), 4)
                            for key, value in (("pearson", row.pearson), ("spearman", row.spearman))}}
        for row in correlation.itertuples()}
    return {"perplexity": metrics, "perplexity_vs_accuracy": correlations}


def perplexity_summary(paths: Iterable[str], expected_params: dict, pruning: dict, results: pd.DataFrame) -> dict:
    """perplexity_headline straight from the result files and the loaded evaluation results ({} without any)."""
    paths = list(paths)
    if not paths:
        return {}
    table = perplexity_table(load_perplexity(paths, expected_params, pruning))
    return perplexity_headline(table, correlation_table(variant_points(table, results)))


def plot_perplexity_vs_accuracy(points: pd.DataFrame, correlation: pd.DataFrame, png_path: str,
                                svg_path: str) -> None:
    """One panel per task category (a row of panels per source), one point per variant: perplexity ratio (log
    scale) against the category's accuracy change, coloured by method; the panel title gives n and both
    correlations."""
    set_style()
    sources = list(dict.fromkeys(points["source"])) or ["no pruned variants"]
    categories = [c for c in CATEGORIES if c in set(points["category"].astype(str))] or ["none"]
    fig, axes = plt.subplots(len(sources), len(categories), figsize=(3.6 * len(categories) + 1.5, 3.4 * len(sources)),
                             squeeze=False, sharey="row")
    stats = correlation.assign(category=correlation["category"].astype(str)).set_index(["source", "category"])
    methods = sorted(set(points["method"]))
    palette = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1)), strict=False))
    for i, source in enumerate(sources):
        for j, category in enumerate(categories):
            ax = axes[i][j]
            panel = points[(points["source"] == source) & (points["category"].astype(str) == category)]
            if len(panel):
                sns.scatterplot(data=panel, x="ratio", y="acc_change", hue="method", palette=palette, ax=ax,
                                legend=i == 0 and j == len(categories) - 1, s=45)
                ax.set_xscale("log")
            ax.axhline(0, color="black", linewidth=0.8)
            title = f"{category} ({source})"
            if (source, category) in stats.index:
                row = stats.loc[(source, category)]
                fmt = lambda value: "--" if pd.isna(value) else f"{value:+.2f}"  # noqa: E731
                title += f"\nn={int(row['n'])}, Spearman {fmt(row['spearman'])}, Pearson {fmt(row['pearson'])}"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("perplexity ratio (pruned / dense)")
            ax.set_ylabel("accuracy change vs dense" if j == 0 else "")
    if methods and axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False, title="method")
    fig.suptitle("Does perplexity predict the accuracy damage? One point per pruned variant")
    fig.tight_layout()
    save_figure(fig, png_path, svg_path)
