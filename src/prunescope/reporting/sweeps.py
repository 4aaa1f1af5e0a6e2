"""The sweep tables and curves (sparsity, calibration size), OWL vs uniform layer sparsity and the calibration
analysis (source/format x category with the calibration-to-task similarity), all from the per-dataset accuracy
changes vs dense."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import seaborn as sns

from prunescope.config import CALIBRATION_KEY_PARTS, NO_CALIBRATION, OWL, parse_calibration_key, parse_pattern_key
from prunescope.io import read_result
from prunescope.reporting.figures import plt, save_figure, set_style
from prunescope.reporting.tables import CATEGORIES


def split_keys(pruned: pd.DataFrame) -> pd.DataFrame:
    """Pruned variants' rows with their pattern and calibration key split into parts (calibration parts empty for
    data-free methods), as _is_base and the tables select them."""
    pattern = pruned["pattern"].map(parse_pattern_key)
    calib = pruned["calib"].map(lambda key: {} if key == NO_CALIBRATION else parse_calibration_key(key))
    parts = {part: calib.map(lambda parts, part=part: parts.get(part)) for part in CALIBRATION_KEY_PARTS}
    return pruned.assign(structure=pattern.str[0], sparsity=pattern.str[1], **parts)


def accuracy_changes(results: pd.DataFrame) -> pd.DataFrame:
    """One row per pruned result: its accuracy change vs the dense model on the same dataset, with the pattern
    and calibration key split into their parts."""
    dense = results[results["method"] == "dense"].set_index(["model", "dataset"])["acc"].rename("dense_acc")
    pruned = results[(results["method"] != "dense") & results["protect"].isna()].join(dense, on=["model", "dataset"])
    return split_keys(pruned.assign(acc_change=pruned["acc"] - pruned["dense_acc"]))


def _is_base(changes: pd.DataFrame, base: dict, keep: Iterable[str] = ()) -> pd.Series:
    """Rows equal to the sweeps' base in every calibration part except `keep` (data-free rows always match)."""
    match = changes["model"] == base["model"]
    for part in set(CALIBRATION_KEY_PARTS) - set(keep):
        match &= changes[part].isna() | (changes[part] == base[part])
    return match


def _by_category(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    table = (rows.groupby([*keys, "category"], observed=True, sort=False)
             .agg(datasets=("dataset", "nunique"), acc_change=("acc_change", "mean")).reset_index())
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values([*keys, "category"], kind="stable").reset_index(drop=True)


def _calibration_experiment(changes: pd.DataFrame, base: dict) -> pd.DataFrame:
    """The calibration experiment's rows: calibrated results at the base model, pattern, nsamples and seqlen,
    any calibration source, format and seed."""
    return changes[_is_base(changes, base, keep=("source", "format", "seed")) & changes["source"].notna()
                   & (changes["pattern"] == base["pattern"])]


def sparsity_table(changes: pd.DataFrame, base: dict, methods: list[str]) -> pd.DataFrame:
    """Mean accuracy change per category along the unstructured sparsity sweep, per sweep method."""
    rows = changes[_is_base(changes, base) & changes["method"].isin(methods)
                   & (changes["structure"] == "unstructured")]
    return _by_category(rows, ["model", "method", "sparsity"])


def _owl_rows(frame: pd.DataFrame, base: dict, methods: list[str], sparsities: list[float]) -> pd.DataFrame:
    """The OWL experiment's rows (split_keys form): uniform and OWL variants of the methods and sparsities at the
    base model and calibration sample, labelled by their layer sparsity."""
    rows = frame[_is_base(frame, base) & frame["method"].isin(methods) & frame["sparsity"].isin(sparsities)
                 & frame["structure"].isin(["unstructured", OWL])]
    return rows.assign(layer_sparsity=rows["structure"].map({"unstructured": "uniform", OWL: "owl"}))


def owl_table(changes: pd.DataFrame, base: dict, methods: list[str], sparsities: list[float],
              perplexity: pd.DataFrame) -> pd.DataFrame:
    """Per OWL method, sparsity and category: the mean accuracy change with uniform and with OWL layer sparsity
    (the same model and calibration sample), OWL minus uniform, and beside them each perplexity source's perplexity
    with uniform and with OWL (perplexity: reporting.perplexity.load_perplexity's rows; empty: no such columns)."""
    table = _by_category(_owl_rows(changes, base, methods, sparsities), ["model", "method", "sparsity",
                                                                          "layer_sparsity"])
    keys = ["model", "method", "sparsity"]
    wide = table.pivot_table(index=[*keys, "category", "datasets"], columns="layer_sparsity", values="acc_change",
                             observed=True).reset_index().rename_axis(columns=None)
    wide = wide.reindex(columns=[*keys, "category", "datasets", "uniform", "owl"])
    wide = wide.assign(owl_minus_uniform=wide["owl"] - wide["uniform"])
    pruned = perplexity[(perplexity["method"] != "dense") & perplexity["protect"].isna()]
    if pruned.empty:
        return wide
    # "source" and "seqlen" are also calibration key parts: the text scored and its windows are renamed out of the way
    pruned = pruned.rename(columns={"source": "text", "seqlen": "window_seqlen"})
    ppl = _owl_rows(split_keys(pruned), base, methods, sparsities)
    ppl = ppl.pivot_table(index=keys, columns=["text", "layer_sparsity"], values="perplexity")
    ppl.columns = [f"perplexity {text} {layer_sparsity}" for text, layer_sparsity in ppl.columns]
    return wide.merge(ppl.reset_index(), on=keys, how="left")


def calib_size_table(changes: pd.DataFrame, base: dict, methods: list[str]) -> pd.DataFrame:
    """Mean accuracy change per category along the nsamples sweep (at the base seqlen) and the seqlen sweep
    (at the base nsamples), at the base pattern."""
    rows = changes[_is_base(changes, base, keep=("nsamples", "seqlen")) & changes["method"].isin(methods)
                   & (changes["pattern"] == base["pattern"]) & changes["source"].notna()]
    rows = rows[(rows["nsamples"] == base["nsamples"]) | (rows["seqlen"] == base["seqlen"])]
    table = _by_category(rows, ["model", "method", "nsamples", "seqlen"])
    return table.astype({"nsamples": int, "seqlen": int})


def calibration_table(changes: pd.DataFrame, base: dict, similarity_paths: Iterable[str]) -> pd.DataFrame:
    """Per calibrated method, calibration source/format and category: mean and std (over seeds) of the accuracy
    change, and the mean calibration-to-task embedding cosine of the category's datasets."""
    rows = _calibration_experiment(changes, base)
    rows = rows.merge(similarity_frame(similarity_paths), on=["model", "calib", "dataset"], how="left",
                      validate="many_to_one")
    per_seed = (rows.groupby(["model", "method", "source", "format", "seed", "category"], observed=True)
                .agg(acc_change=("acc_change", "mean"), similarity=("embedding_cosine", "mean")).reset_index())
    table = (per_seed.groupby(["model", "method", "source", "format", "category"], observed=True, sort=False)
             .agg(seeds=("seed", "nunique"), acc_change=("acc_change", "mean"), acc_change_std=("acc_change", "std"),
                  similarity=("similarity", "mean")).reset_index())
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(["model", "method", "source", "format", "category"], kind="stable").reset_index(
        drop=True)


def calibration_extremes(table: pd.DataFrame) -> dict:
    """Per calibrated method: the calibration source-format with the best and the worst mean change over the
    categories (the calibration experiment's headline)."""
    means = (table.assign(calibration=table["source"] + "-" + table["format"])
             .groupby(["method", "calibration"])["acc_change"].mean())
    return {method: {"best": {"calibration": values.idxmax()[1], "acc_change": round(float(values.max()), 4)},
                     "worst": {"calibration": values.idxmin()[1], "acc_change": round(float(values.min()), 4)}}
            for method, values in means.groupby(level="method")}


def calibration_headline(changes: pd.DataFrame, base: dict, similarity_paths: Iterable[str]) -> dict:
    """The calibration experiment's headline numbers (in reports/metrics.json): the best and worst source-format
    per calibrated method, and the correlation of calibration-to-task similarity with the accuracy change."""
    similarity_paths = list(similarity_paths)
    return {"calibration": calibration_extremes(calibration_table(changes, base, similarity_paths)),
            "calibration_similarity_vs_change": similarity_correlation(changes, base, similarity_paths)}


def similarity_frame(paths: Iterable[str]) -> pd.DataFrame:
    """One row per (calibration sample, dataset) with its similarity scores (no rows for a grid without
    calibrated methods)."""
    rows = []
    for path in paths:
        result = read_result(path, "calibration_similarity")
        rows += [{"model": result["model"], "calib": result["calibration"], "dataset": dataset, **scores}
                 for dataset, scores in result["datasets"].items()]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["model", "calib", "dataset", "embedding_cosine"])


def similarity_correlation(changes: pd.DataFrame, base: dict, similarity_paths: Iterable[str]) -> dict:
    """Pearson correlation, over (calibration sample, dataset) pairs of the calibration experiment, between the
    embedding cosine and the accuracy change (None with fewer than 3 pairs or no spread)."""
    rows = _calibration_experiment(changes, base)
    rows = rows.merge(similarity_frame(similarity_paths), on=["model", "calib", "dataset"])
    value = rows["embedding_cosine"].corr(rows["acc_change"]) if len(rows) >= 3 else None
    return {"n": len(rows), "pearson": None if value is None or pd.isna(value) else round(float(value), 4)}


def plot_sweep(table: pd.DataFrame, x: str, xlabel: str, png_path: str, svg_path: str) -> None:
    """Accuracy change per category along one sweep, one line per category, one dash style per method."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=table.astype({"category": str}), x=x, y="acc_change", hue="category", style="method",
                 hue_order=[c for c in CATEGORIES if c in set(table["category"].astype(str))], markers=True, ax=ax)
    ax.axhline(0, color="black", linewidth=0.8)
    if x in ("nsamples", "seqlen"):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table[x].unique()), labels=[str(v) for v in sorted(table[x].unique())])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy change vs dense")
    ax.set_title(f"Accuracy change along the {xlabel} sweep ({', '.join(sorted(set(table['model'])))})")
    ax.legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)


def plot_calibration_heatmap(changes: pd.DataFrame, base: dict, png_path: str, svg_path: str) -> None:
    """Accuracy change (mean over seeds) per calibration source/format (rows) and dataset (columns)."""
    set_style()
    rows = _calibration_experiment(changes, base)
    rows = rows.assign(calibration=rows["method"] + " " + rows["source"] + "-" + rows["format"],
                       column=rows["category"] + ": " + rows["dataset"])
    order = (rows.assign(rank=pd.Categorical(rows["category"], CATEGORIES, ordered=True).codes)
             .sort_values(["rank", "dataset"])["column"].unique())
    grid = rows.pivot_table(index="calibration", columns="column", values="acc_change", aggfunc="mean")[order]
    fig, ax = plt.subplots(figsize=(1.0 * len(order) + 3, 0.6 * len(grid) + 2))
    limit = max(float(grid.abs().max().max()), 0.01)
    sns.heatmap(grid, annot=True, fmt="+.2f", cmap="vlag_r", vmin=-limit, vmax=limit, ax=ax,
                cbar_kws={"label": "accuracy change vs dense"})
    ax.set_xlabel("dataset")
    ax.set_ylabel("method, calibration source-format")
    ax.set_title(f"Calibration source vs dataset at {base['pattern']} (mean over seeds)")
    save_figure(fig, png_path, svg_path)
