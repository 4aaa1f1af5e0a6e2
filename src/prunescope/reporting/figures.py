"""Seaborn figures, one style for all: colour-blind-safe palette, readable labels, byte-stable files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from prunescope.io import atomic_path  # noqa: E402
from prunescope.reporting.tables import CATEGORIES, studied  # noqa: E402


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind", font_scale=1.2)
    plt.rcParams["svg.hashsalt"] = "prunescope"  # stable element ids: same data, same SVG bytes


def save_figure(fig, png_path: str, svg_path: str) -> None:
    for path, fmt, metadata in ((png_path, "png", {"Software": None}), (svg_path, "svg", {"Date": None})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def plot_accuracy_change(table: pd.DataFrame, png_path: str, svg_path: str,
                         variants: Iterable[Sequence[str]] | None = None) -> None:
    """Bars: the category_drop table's mean accuracy change vs dense per task category, one bar per pruned
    variant (method, pattern), error bars = its 95% bootstrap CI; one panel per model.

    variants, (model, method, pattern, calibration key) tuples, picks the rows to draw (seeds are averaged in the
    table, so a key's seed is ignored); by default every row. A (method, pattern) drawn with more than one
    calibration gets one bar per calibration. The table's at-floor datasets are not in the bars: a category with
    some left out is marked * on its axis, one with none above floor is labelled "at floor" without a bar, and a note
    under the figure names them.
    """
    set_style()
    data = table.assign(category=table["category"].astype(str),
                        left_out=table["left_out"].astype(object).fillna("").astype(str) if "left_out" in table else "")
    if variants is not None:
        data = data[studied(data, "calibration", variants)]
    several = data.groupby(["model", "method", "pattern"])["calibration"].transform("nunique") > 1
    data = data.assign(variant=(data["method"] + " " + data["pattern"]).where(
        ~several, data["method"] + " " + data["pattern"] + " " + data["calibration"]))
    categories = [c for c in CATEGORIES if c in set(data["category"])]
    labels = sorted(set(data.dropna(subset=["acc_change"])["variant"]))
    colors = dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1)), strict=False))
    models = sorted(set(data["model"])) or ["no pruned results"]
    columns = min(len(models), 2)
    rows = -(-len(models) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4 * rows), sharey=True, squeeze=False)
    width = 0.8 / max(len(labels), 1)
    notes = []
    for index, (ax, model) in enumerate(zip(axes.flat, models, strict=False)):
        ours = data[data["model"] == model]
        for j, label in enumerate(labels):
            bars = (ours[ours["variant"] == label].set_index("category")
                    .reindex(categories).dropna(subset=["acc_change"]))
            x = [categories.index(c) - 0.4 + width * (j + 0.5) for c in bars.index]
            err = [(bars["acc_change"] - bars["ci_low"]).clip(lower=0).fillna(0),
                   (bars["ci_high"] - bars["acc_change"]).clip(lower=0).fillna(0)]  # no interval: no error bar
            ax.bar(x, bars["acc_change"], width=width, color=colors[label], yerr=err, capsize=3,
                   error_kw={"elinewidth": 1, "ecolor": "0.2"})
        ticks = []
        for position, category in enumerate(categories):
            rows_of = ours[ours["category"] == category]
            left_out = sorted({d for cell in rows_of["left_out"] for d in cell.split(", ") if d})
            if len(rows_of) and rows_of["acc_change"].isna().all():
                ax.text(position, 0, "at floor", ha="center", va="bottom", fontsize=9, color="0.3")
                ticks.append(f"{category}\n(at floor)")
            else:
                ticks.append(f"{category}*" if left_out else category)
            if left_out:
                notes.append(f"{model} {category}: {', '.join(left_out)}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(categories)), ticks)
        ax.set_xlabel("task category")
        ax.set_ylabel("accuracy change vs dense (95% CI)" if index % columns == 0 else "")
        ax.set_title(model if len(models) > 1 else f"Pruning's effect by task category ({model})")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    if len(models) > 1:
        fig.suptitle("Pruning's effect by task category")
    if labels:
        fig.legend([Patch(color=colors[label]) for label in labels], labels, title="method, pattern",
                   frameon=False, bbox_to_anchor=(1.0, 0.9), loc="upper left")
    fig.tight_layout()
    if notes:
        fig.text(0.0, 0.0, "Left out as at floor (the dense model not clearly above chance and the majority label, "
                 "so no damage can show):\n" + "\n".join(notes), ha="left", va="top", fontsize=9, wrap=True)
    save_figure(fig, png_path, svg_path)
