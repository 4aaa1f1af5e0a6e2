"""Seaborn figures, one style for all: colour-blind-safe palette, readable labels, byte-stable files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from prunescope.io import atomic_path  # noqa: E402
from prunescope.reporting.tables import CATEGORIES  # noqa: E402


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind", font_scale=1.2)
    plt.rcParams["svg.hashsalt"] = "prunescope"  # stable element ids: same data, same SVG bytes


def save_figure(fig, png_path: str, svg_path: str) -> None:
    for path, fmt, metadata in ((png_path, "png", {"Software": None}), (svg_path, "svg", {"Date": None})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def plot_accuracy_change(table: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Bars: mean accuracy change vs dense per category, one hue per pruned variant; error bars = SE over datasets."""
    set_style()
    data = table.assign(variant=table["method"] + " " + table["pattern"])
    categories = [c for c in CATEGORIES if c in set(data["category"])]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=data, x="category", y="acc_change", hue="variant", order=categories, errorbar="se",
                capsize=0.1, ax=ax)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("task category")
    ax.set_ylabel("accuracy change vs dense")
    models = ", ".join(sorted(set(data["model"])))
    ax.set_title(f"Pruning's effect by task category ({models})")
    ax.legend(title="method, pattern", frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)
