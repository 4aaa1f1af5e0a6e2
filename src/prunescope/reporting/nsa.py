"""NSA's tables, headline numbers and figures: matched-neuron drops against accuracy drops, the causal check,
NSA-guided vs plain pruning, and the token heatmaps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from prunescope.io import atomic_path, read_result
from prunescope.reporting.figures import plt, save_figure, set_style  # plt on the Agg backend
from prunescope.reporting.tables import CATEGORIES

DROP_KEYS = ["model", "dataset", "method", "pattern", "calib"]
HEATMAP_CONTEXT = 10  # tokens shown on each side of the key word


def drop_table(compare_paths: Iterable[str], results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and pruned variant: matched-neuron drops, semantic retention and the accuracy drop."""
    rows = []
    for path in compare_paths:
        result = read_result(path, "nsa_compare")
        rows.append({**{key: result[key] for key in DROP_KEYS}, "pairs": result["pairs"],
                     "mean_relative_drop": result["mean_relative_drop"],
                     "fraction_dropped": sum(g["fraction_dropped"] * g["pairs"] for g in result["groups"].values())
                     / max(result["pairs"], 1),
                     "semantic_retention": result["semantic_retention"]})
    drops = pd.DataFrame(rows)
    dense = results[results["method"] == "dense"].set_index(["model", "dataset"])["acc"].rename("dense_acc")
    table = drops.merge(results[DROP_KEYS + ["acc"]], on=DROP_KEYS, how="left", validate="one_to_one")
    table = table.join(dense, on=["model", "dataset"])
    table["acc_drop"] = table["dense_acc"] - table["acc"]
    return table.sort_values(DROP_KEYS, kind="stable").reset_index(drop=True)


def drop_correlation(table: pd.DataFrame) -> dict:
    """Pearson and Spearman correlation of the NSA drop with the accuracy drop (None when undefined)."""
    def corr(method: str) -> float | None:
        if len(table) < 3:
            return None
        value = table["mean_relative_drop"].corr(table["acc_drop"], method=method)
        return None if pd.isna(value) else round(float(value), 4)

    return {"n": len(table), "pearson": corr("pearson"), "spearman": corr("spearman")}


def causal_table(causal_paths: Iterable[str]) -> pd.DataFrame:
    keys = ["dataset", "k", "acc", "acc_matched_ablated", "acc_random_ablated", "matched_change", "random_change"]
    return pd.DataFrame([{key: read_result(path, "nsa_causal")[key] for key in keys} for path in causal_paths])


def guided_table(results: pd.DataFrame, guided: pd.DataFrame) -> pd.DataFrame:
    """Per protected category, guided variant and task category: dense, plain and guided mean accuracy."""
    dense = results[results["method"] == "dense"][["model", "dataset", "acc"]].rename(columns={"acc": "dense_acc"})
    plain = results[DROP_KEYS + ["acc"]].rename(columns={"acc": "plain_acc"})
    merged = (guided[["protect", "category", *DROP_KEYS, "acc"]].rename(columns={"acc": "guided_acc"})
              .merge(plain, on=DROP_KEYS, validate="one_to_one").merge(dense, on=["model", "dataset"]))
    table = (merged.groupby(["model", "protect", "method", "pattern", "calib", "category"], sort=False)
             [["dense_acc", "plain_acc", "guided_acc"]].mean().reset_index())
    table["recovered"] = table["guided_acc"] - table["plain_acc"]
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(["model", "protect", "method", "pattern", "calib", "category"],
                             kind="stable").reset_index(drop=True)


def nsa_metrics(drops: pd.DataFrame, causal: pd.DataFrame, guided: pd.DataFrame) -> dict:
    """Headline numbers: the drop-accuracy correlation, matched vs random ablation, guided recovery."""
    metrics = {"drop_vs_accuracy": drop_correlation(drops),
               "causal": {row.dataset: {"matched_change": round(row.matched_change, 4),
                                        "random_change": round(row.random_change, 4)} for row in causal.itertuples()}}
    for row in guided.itertuples():
        key = f"guided_{row.protect}_{row.method}_{row.pattern}_{row.calib}"
        metrics.setdefault(key, {})[str(row.category)] = {"plain": round(row.plain_acc, 4),
                                                          "guided": round(row.guided_acc, 4),
                                                          "recovered": round(row.recovered, 4)}
    return metrics


def write_markdown(drops: pd.DataFrame, causal: pd.DataFrame, guided: pd.DataFrame, path: str) -> None:
    correlation = drop_correlation(drops)
    text = ("## Matched neurons: activation drop vs accuracy drop\n\n"
            f"Pearson r = {correlation['pearson']}, Spearman rho = {correlation['spearman']} over "
            f"{correlation['n']} (dataset, variant) pairs.\n\n" + drops.to_markdown(index=False, floatfmt=".3f")
            + "\n\n## Causal check: zeroing the most strongly matched neurons vs as many random ones (dense)\n\n"
            + causal.to_markdown(index=False, floatfmt=".3f")
            + "\n\n## NSA-guided pruning: protected category's matched neurons exempt, equal layer sparsity\n\n"
            + (guided.to_markdown(index=False, floatfmt=".3f") if len(guided) else "(no guided variants in this grid)")
            + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def plot_heatmap(compare_results: Sequence[dict], png_path: str, svg_path: str) -> None:
    """One neuron on one example: the dense row above one row per pruned variant, the key word's values written."""
    set_style()
    example = compare_results[0]["example"]
    first = example["key_tokens"][0]
    window = slice(max(0, first - HEATMAP_CONTEXT), first + HEATMAP_CONTEXT + 1)
    rows = [example["dense"][window]] + [r["example"]["pruned"][window] for r in compare_results]
    labels = ["dense"] + [f"{r['method']} {r['pattern']}" for r in compare_results]
    tokens = [t.replace("\n", "\\n") for t in example["tokens"][window]]
    values = np.array(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(tokens)), 0.6 * len(rows) + 1.6))
    limit = float(np.abs(values).max()) or 1.0
    sns.heatmap(values, ax=ax, cmap="vlag", vmin=-limit, vmax=limit, xticklabels=tokens, yticklabels=labels,
                cbar_kws={"label": "activation"})
    for position in example["key_tokens"]:
        column = position - window.start
        if 0 <= column < values.shape[1]:
            for row in range(values.shape[0]):
                ax.text(column + 0.5, row + 0.5, f"{values[row, column]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{compare_results[0]['dataset']}: neuron {example['neuron']} of layer {example['layer']}, "
                 f"key word '{example['word']}'")
    ax.tick_params(axis="x", rotation=90)
    save_figure(fig, png_path, svg_path)


def plot_drop_scatter(drops: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Each (dataset, variant): mean matched-neuron drop against the accuracy drop."""
    set_style()
    correlation = drop_correlation(drops)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sns.scatterplot(data=drops, x="mean_relative_drop", y="acc_drop", hue="dataset", style="method", s=80, ax=ax)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("mean relative activation drop of matched neurons")
    ax.set_ylabel("accuracy drop vs dense")
    r = "n/a" if correlation["pearson"] is None else f"{correlation['pearson']:.2f}"
    ax.set_title(f"NSA drop vs accuracy drop (Pearson r = {r}, n = {correlation['n']})")
    ax.legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)


def plot_guided(table: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Dense, plain and NSA-guided accuracy per category (mean over the guided variants' calibration seeds)."""
    set_style()
    long = (table.groupby(["protect", "method", "pattern", "category"], observed=True)
            [["dense_acc", "plain_acc", "guided_acc"]].mean().reset_index()
            .melt(id_vars=["protect", "method", "pattern", "category"], var_name="model variant", value_name="acc"))
    long["model variant"] = long["model variant"].map({"dense_acc": "dense", "plain_acc": "plain pruning",
                                                       "guided_acc": "NSA-guided pruning"})
    long["category"] = long["category"].astype(str)
    panels = sorted(set(zip(long["protect"], long["method"], long["pattern"], strict=True)))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6.5 * max(len(panels), 1), 4), squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no NSA-guided variants in this grid (nsa_guided)", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (protect, method, pattern) in zip(axes[0], panels, strict=True):
        rows = long[(long["protect"] == protect) & (long["method"] == method) & (long["pattern"] == pattern)]
        sns.barplot(data=rows, x="category", y="acc", hue="model variant", ax=ax,
                    order=[c for c in CATEGORIES if c in set(rows["category"])])
        ax.set_title(f"{method} {pattern}, {protect} neurons protected")
        ax.set_xlabel("task category")
        ax.set_ylabel("accuracy")
        ax.legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)
