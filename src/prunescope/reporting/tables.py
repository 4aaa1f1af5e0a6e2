"""From result JSONs to the accuracy table (dense baseline beside every pruned result) and headline metrics."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from prunescope.config import variant_options
from prunescope.io import atomic_path, read_result

CATEGORIES = ["sentiment", "nli", "similarity", "qa"]
VARIANT_KEYS = ["method", "pattern", "calibration"]
PER_EXAMPLE = ("acc", "acc_norm", "choice", "gold", "n_choices")


class StaleResultError(ValueError):
    """A result file made with other evaluation params than params.yaml now holds."""


def load_results(paths: Iterable[str], expected_params: dict, pruning: dict) -> pd.DataFrame:
    """One row per result file; refuses any file whose embedded params differ from `expected_params`, or whose
    variant was pruned with other options than params.yaml's `pruning` section now gives (config.variant_options).

    Besides the scores, a row holds its file's path and the per-example lists acc_per_example and
    acc_norm_per_example (0/1), choice_per_example, gold_per_example and n_choices_per_example (what each example
    answered; see evaluation.harness.extract_per_example), each None for a result made before it was recorded (see
    drops.category_drop_table and floor.floor_table).
    """
    rows = []
    for path in paths:
        result = current_result(path, "evaluate", expected_params, pruning)
        metrics = result["metrics"]
        rows.append({
            "model": result["model"], "category": result["category"], "dataset": result["dataset"],
            "method": result["method"], "pattern": result["pattern"], "calib": result["calib"],
            "n_examples": metrics["n"], "acc": metrics["acc"], "acc_norm": metrics["acc_norm"],
            "protect": result.get("protect"),  # NSA-guided variants: the category whose neurons were protected
            "path": str(path), **{f"{name}_per_example": metrics.get("per_example", {}).get(name)
                                  for name in PER_EXAMPLE},
        })
    return pd.DataFrame(rows)


def current_result(path: str, rule: str, expected_params: dict, pruning: dict) -> dict:
    """The verified result at `path`, refused (StaleResultError) if made with other params than `expected_params` or
    on a variant pruned with other options than params.yaml's `pruning` section now gives."""
    result = read_result(path, rule)
    if result["params"] != expected_params:
        raise StaleResultError(
            f"{path} was made with params {result['params']}, but params.yaml now gives {expected_params}: "
            f"rerun snakemake to rerun its {rule} job (or delete the file)")
    options = variant_options(result["method"], result["pattern"], pruning)
    if result.get("pruning") != options:
        raise StaleResultError(
            f"{path} was evaluated on a variant pruned with {result.get('pruning', 'unrecorded options')}, but "
            f"params.yaml now gives {options}: rerun its prune and {rule} jobs (snakemake --forcerun prune "
            f"{rule}, or delete the file and its artifact)")
    return result


def calibration_group(calib: str) -> str:
    """A calibration key without its seed: results of different seeds are averaged together."""
    return re.sub(r"-s\d+$", "", calib)


def studied(table: pd.DataFrame, calib_column: str, variants: Iterable[Sequence[str]]) -> pd.Series:
    """Which rows are studied variants ((model, method, pattern, calibration key) tuples); a table whose calibration
    column holds keys without their seed ("calibration", seeds averaged) matches every seed of a key."""
    strip = calibration_group if calib_column == "calibration" else str
    keep = {(model, method, pattern, strip(calib)) for model, method, pattern, calib in variants}
    keys = zip(table["model"], table["method"], table["pattern"], table[calib_column], strict=True)
    return pd.Series([key in keep for key in keys], index=table.index, dtype=bool)


def accuracy_table(results: pd.DataFrame, floors: pd.DataFrame | None = None, answers: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """Per dataset and pruned variant: mean and std over calibration seeds, the dense accuracy, the change.

    floors (floor.floor_table) adds the dataset's floor and whether it is at floor for the model; answers
    (floor.answer_shares) adds whether the dense model answers one label (dense_constant) and on how many of the
    variant's seeds the pruned model does (constant_seeds).
    """
    dense = (results[results["method"] == "dense"][["model", "dataset", "acc", "acc_norm"]]
             .rename(columns={"acc": "dense_acc", "acc_norm": "dense_acc_norm"}))
    pruned = results[results["method"] != "dense"].assign(calibration=lambda d: d["calib"].map(calibration_group))
    keys = ["model", "category", "dataset", *VARIANT_KEYS]
    table = (pruned.groupby(keys, sort=False)
             .agg(n_examples=("n_examples", "first"), n_seeds=("acc", "size"), acc_mean=("acc", "mean"),
                  acc_std=("acc", "std"), acc_norm_mean=("acc_norm", "mean"))
             .reset_index())
    table = table.merge(dense, on=["model", "dataset"], how="left", validate="many_to_one")
    table["acc_change"] = table["acc_mean"] - table["dense_acc"]
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    columns = keys + ["n_examples", "n_seeds", "dense_acc", "acc_mean", "acc_std", "acc_change",
                      "dense_acc_norm", "acc_norm_mean"]
    if floors is not None:
        table = table.merge(floors[["model", "dataset", "floor", "at_floor"]], on=["model", "dataset"], how="left",
                            validate="many_to_one")
        columns += ["floor", "at_floor"]
    if answers is not None:
        flags = answers.assign(calibration=answers["calib"].map(calibration_group))
        dense_flags = (flags[flags["method"] == "dense"][["model", "dataset", "constant"]]
                       .rename(columns={"constant": "dense_constant"}))
        seeds = (flags[flags["method"] != "dense"].groupby(["model", "dataset", *VARIANT_KEYS])["constant"].sum()
                 .rename("constant_seeds").reset_index())
        table = (table.merge(dense_flags, on=["model", "dataset"], how="left", validate="many_to_one")
                 .merge(seeds, on=["model", "dataset", *VARIANT_KEYS], how="left", validate="one_to_one"))
        columns += ["dense_constant", "constant_seeds"]
    return table.sort_values(keys, kind="stable")[columns].reset_index(drop=True)


def write_table(table: pd.DataFrame, csv_path: str, markdown_path: str, latex_path: str) -> None:
    """CSV (every column, fixed float format), a Markdown view (one row per dataset, one column per variant) and
    a LaTeX table of the accuracy columns (one row per dataset and variant)."""
    write_csv(table, csv_path)
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(_markdown(table), encoding="utf-8")
    write_latex(table[list(LATEX_COLUMNS)].rename(columns=LATEX_COLUMNS), latex_path)


def write_csv(table: pd.DataFrame, path: str) -> None:
    """Every column, floats to 4 decimals (byte-stable across reruns), written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


def write_markdown(table: pd.DataFrame, path: str, title: str, parse_numbers: bool = True) -> None:
    """A title line and the table as Markdown (floats to 3 decimals, missing values as --), written atomically;
    parse_numbers False keeps text cells as written (tabulate would reformat a p-value string like 4.2e-06)."""
    view = table.astype(object).where(table.notna(), None).to_markdown(
        index=False, floatfmt=".3f", missingval="--", disable_numparse=not parse_numbers)
    with atomic_path(path) as tmp:
        tmp.write_text(f"{title}\n\n{view}\n", encoding="utf-8")


def write_latex(table: pd.DataFrame, path: str) -> None:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule; needs \\usepackage{booktabs}): text escaped, text
    columns left- and numbers right-aligned, floats to 3 decimals, missing values as --, written atomically."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(dtype) else "l" for dtype in table.dtypes)
    styler = (table.style.hide(axis="index").format(precision=3, na_rep="--", escape="latex")
              .format_index(escape="latex", axis=1))
    with atomic_path(path) as tmp:
        tmp.write_text(styler.to_latex(hrules=True, column_format=align), encoding="utf-8")


LATEX_COLUMNS = {"model": "model", "category": "category", "dataset": "dataset", "method": "method",
                 "pattern": "pattern", "calibration": "calibration", "n_examples": "n", "n_seeds": "seeds",
                 "dense_acc": "dense", "acc_mean": "pruned", "acc_std": "std", "acc_change": "change"}


def _markdown(table: pd.DataFrame) -> str:
    flagged = "constant_seeds" in table

    def cell(row) -> str:
        std = "" if pd.isna(row.acc_std) else f" ± {row.acc_std:.3f}"
        constant = f" [one label: {row.constant_seeds} of {row.n_seeds}]" if flagged and row.constant_seeds else ""
        return f"{row.acc_mean:.3f}{std} ({row.acc_change:+.3f}){constant}"

    view = table.assign(
        variant=table["method"] + " " + table["pattern"] + " " + table["calibration"], cell=table.apply(cell, axis=1))
    index = ["model", "category", "dataset", "n_examples", "dense_acc"]
    if "at_floor" in table:
        view = view.assign(status=[_status(row) for row in table.itertuples()])
        index += ["floor", "status"]
    wide = view.pivot_table(index=index, columns="variant", values="cell", aggfunc="first", observed=True,
                            sort=False).reset_index()
    wide["dense_acc"] = wide["dense_acc"].map("{:.3f}".format)
    if "floor" in wide:
        wide["floor"] = wide["floor"].map("{:.3f}".format)
    wide = wide.rename(columns={"dense_acc": "dense", "n_examples": "n"})
    header = ("Accuracy per dataset: dense, then each pruned variant as mean ± std over calibration seeds "
              "(change vs dense).")
    if "at_floor" in table:
        header += (" floor = max(chance, majority-label rate); status: 'AT FLOOR' where the dense model is not "
                   "clearly above it (exact binomial test, reports/tables/floor.md): pruning cannot show damage "
                   "there, and the category averages and claims leave it out.")
    if flagged:
        header += (" 'one label': the model answers the same choice on >= 95% of the examples (on k of the "
                   "variant's seeds).")
    return header + "\n\n" + wide.to_markdown(index=False) + "\n"


def _status(row) -> str:
    parts = ["AT FLOOR" if row.at_floor is True or row.at_floor == 1 else "above floor"]
    if getattr(row, "dense_constant", None) == 1:
        parts.append("dense answers one label")
    return "; ".join(parts)


def headline_metrics(table: pd.DataFrame) -> dict:
    """Per model and pruned variant: dense and pruned mean accuracy per category, and the sentiment drop's rank.

    With the floor columns (accuracy_table's floors), the means leave at-floor datasets out, a category whose
    datasets are all at floor is {"at_floor": true} without numbers (and takes no rank), and each model lists its
    at-floor datasets under "at_floor"."""
    metrics: dict = {}
    floored = table["at_floor"].fillna(False).astype(bool) if "at_floor" in table else pd.Series(False, table.index)
    for model, rows in table[floored].groupby("model", sort=True):
        metrics.setdefault(model, {})["at_floor"] = sorted(set(rows["dataset"]))
    variants = table.assign(floored=floored).groupby(["model", *VARIANT_KEYS], sort=False, observed=True)
    for (model, method, pattern, calibration), rows in variants:
        above = rows[~rows["floored"]]
        per_category = above.groupby("category", observed=True)[["dense_acc", "acc_mean", "acc_change"]].mean()
        change = per_category["acc_change"]
        entry = {str(cat): {"at_floor": True} for cat in CATEGORIES if cat in set(rows["category"])}
        entry |= {
            str(cat): {"dense": round(float(r.dense_acc), 4), "pruned": round(float(r.acc_mean), 4),
                       "change": round(float(r.acc_change), 4)}
            for cat, r in per_category.iterrows()
        }
        if "sentiment" in change.index:
            entry["sentiment_drop_rank"] = int(change.rank(method="min").loc["sentiment"])
        metrics.setdefault(model, {})[f"{method}_{pattern}_{calibration}"] = entry
    return metrics
