"""Which datasets can show what pruning does: the dense model's accuracy against chance and the majority-label rate.

A model answering at chance, or one label every time, has no accuracy left to lose: pruning that flips its constant
answer reads as a gain of the difference in label shares, and a category of such datasets looks unhurt. So each
(model, dataset) gets a floor, max(chance, majority-label rate), on the examples actually scored:

- chance: the mean over examples of 1 / number of choices (what a uniform guess scores);
- majority-label rate: the share of the most frequent gold label (what answering one label every time scores). Only
  for datasets with one set of label words: where each example has its own choices, scored as continuations and
  never listed in the prompt, a choice's position is nothing the model sees or can repeat (timedial's answer is
  always the third of its list), so the floor there is chance alone and no variant is flagged as answering one label.

The dense model is above floor when an exact one-sided binomial test (scipy.stats.binomtest, alternative "greater")
puts its correct count clearly above both rates. With varying choice counts the number right under chance is a
Poisson-binomial, whose variance is below the binomial's at the same mean, so the binomial test is conservative
there. Being above both is an intersection-union test, whose p is the larger of the two (no correction needed
within a dataset). Those p-values are Holm-corrected over each model's datasets: the floor table decides which data
the category comparisons and claims may use, and a dataset wrongly admitted can manufacture a finding (a flipped
constant answer), while one wrongly left out only costs information; so the family-wise error of admitting an
at-floor dataset is held at alpha per model. The family is the model's datasets, not the whole grid, because each
model's claims draw on its own datasets, and a model added to the grid must not change another model's floors.

Also here: which variants answer one label on >= 95% of a dataset's examples (answer_shares), and the retained
headroom statistic the claims compare categories by (headroom_statistic; the formula is drops.retained_headroom).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from prunescope.reporting.drops import RERUN, MissingPerExampleError, retained_headroom
from prunescope.reporting.statistics import Means, holm
from prunescope.reporting.tables import CATEGORIES, write_csv, write_markdown

CONSTANT_SHARE = 0.95
FLOOR_COLUMNS = ["model", "category", "dataset", "n", "dense_acc", "chance", "majority", "floor", "p_chance",
                 "p_majority", "p_holm", "at_floor", "dense_answer", "dense_answer_share"]
ANSWER_COLUMNS = ["model", "category", "dataset", "method", "pattern", "calib", "answer", "share", "constant"]


class MissingAnswersError(MissingPerExampleError):
    """A result file without each example's answer (made before they were recorded): no floor, no constant-answer
    check."""


def answers_of(row) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(choice, gold, n_choices) per example of one load_results row; a clear error for a result made without them."""
    fields = (row.choice_per_example, row.gold_per_example, row.n_choices_per_example)
    if not all(isinstance(values, list) for values in fields):
        raise MissingAnswersError(
            f"{row.path} has no per-example answers (metrics.per_example choice, gold and n_choices), which the floor "
            f"table and the constant-answer check need: it was made by older code; rerun the evaluate rules: {RERUN}")
    if any(len(values) != row.n_examples for values in fields):
        raise MissingAnswersError(f"{row.path}: its per-example answers do not match n = {row.n_examples}; rerun the "
                                  f"evaluate rules: {RERUN}")
    return tuple(np.asarray(values, dtype=np.int64) for values in fields)


def chance_rate(n_choices: Sequence[int]) -> float:
    """The expected accuracy of a uniform guess: the mean over examples of 1 / number of choices."""
    return float(np.mean(1 / np.asarray(n_choices, dtype=np.float64)))


def majority_rate(gold: Sequence[int]) -> float:
    """The share of the most frequent gold choice index: the best a constant answer can score on these examples."""
    return float(np.bincount(np.asarray(gold, dtype=np.int64)).max() / len(gold))


def p_above(correct: int, n: int, rate: float) -> float:
    """Exact one-sided binomial p of 'no better than `rate`': P(Binomial(n, rate) >= correct)."""
    return float(stats.binomtest(int(correct), int(n), float(rate), alternative="greater").pvalue)


def floor_table(results: pd.DataFrame, alpha: float, own_choices: Collection[str] = ()) -> pd.DataFrame:
    """One row per model and dataset of the dense results: the dense accuracy, chance, the majority-label rate, the
    floor (their maximum), both one-sided p-values, the Holm-adjusted p of the larger over the model's datasets, and
    at_floor (adjusted p >= alpha); also the dense model's most frequent answer and its share. own_choices: the
    datasets whose examples have choices of their own (no majority label: their floor is chance)."""
    dense = results[(results["method"] == "dense") & _plain(results)]
    duplicated = dense[dense.duplicated(["model", "dataset"], keep=False)]
    if len(duplicated):
        raise ValueError(f"more than one dense result for one model and dataset: {sorted(set(duplicated['path']))}")
    rows = []
    for row in dense.itertuples():
        choice, gold, n_choices = answers_of(row)
        n, correct = len(gold), int((choice == gold).sum())
        if correct != round(row.acc * n):
            raise ValueError(f"{row.path}: its per-example answers get {correct} of {n} right, but acc = {row.acc}")
        chance = chance_rate(n_choices)
        majority = None if row.dataset in own_choices else majority_rate(gold)
        answer, share = (None, None) if row.dataset in own_choices else _top_answer(choice)
        rows.append({"model": row.model, "category": row.category, "dataset": row.dataset, "n": n,
                     "dense_acc": correct / n, "chance": chance, "majority": majority,
                     "floor": max(chance, majority or 0.0), "p_chance": p_above(correct, n, chance),
                     "p_majority": None if majority is None else p_above(correct, n, majority),
                     "dense_answer": answer, "dense_answer_share": share})
    table = pd.DataFrame(rows, columns=FLOOR_COLUMNS)
    for _, index in table.groupby("model", sort=False).groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, ["p_chance", "p_majority"]].astype(float).max(axis=1))
    table["at_floor"] = (table["p_holm"] >= alpha).astype(bool)
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(["model", "category", "dataset"], kind="stable").reset_index(drop=True)


def own_choice_datasets(records: Mapping[str, Sequence[dict]]) -> set[str]:
    """The datasets (name -> prepared records) whose examples do not all offer one list of choices: there a
    choice's position is no answer the model can repeat, so they have no majority label."""
    return {name for name, rows in records.items() if len({tuple(row["choices"]) for row in rows}) > 1}


def answer_shares(results: pd.DataFrame, threshold: float = CONSTANT_SHARE, own_choices: Collection[str] = ()
                  ) -> pd.DataFrame:
    """One row per result (dense and pruned; NSA-guided left out) of a dataset with one set of label words (not in
    own_choices): the choice index it answers most often, its share of the examples, and constant: whether that share
    is >= threshold (the variant answers one label)."""
    rows = []
    plain = results[_plain(results)]
    for row in plain[~plain["dataset"].isin(list(own_choices))].itertuples():
        answer, share = _top_answer(answers_of(row)[0])
        rows.append({"model": row.model, "category": row.category, "dataset": row.dataset, "method": row.method,
                     "pattern": row.pattern, "calib": row.calib, "answer": answer, "share": share,
                     "constant": share >= threshold})
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


def _plain(results: pd.DataFrame) -> pd.Series:
    return results["protect"].isna() if "protect" in results else pd.Series(True, index=results.index)


def _top_answer(choice: np.ndarray) -> tuple[int, float]:
    counts = np.bincount(choice)
    return int(counts.argmax()), float(counts.max() / len(choice))


def above_floor(frame: pd.DataFrame, floors: pd.DataFrame) -> pd.DataFrame:
    """The rows of a frame with model and dataset columns whose dataset is above floor for that model."""
    floored = set(zip(floors.loc[floors["at_floor"], "model"], floors.loc[floors["at_floor"], "dataset"], strict=True))
    keep = [(model, dataset) not in floored for model, dataset in zip(frame["model"], frame["dataset"], strict=True)]
    return frame[np.asarray(keep, dtype=bool)]


def at_floor_by_model(floors: pd.DataFrame) -> dict[str, list[str]]:
    """model -> its at-floor datasets (models with none left out)."""
    rows = floors[floors["at_floor"]]
    return {model: sorted(group["dataset"]) for model, group in rows.groupby("model", sort=True)}


def headroom_statistic(units: Sequence[tuple[str, str, str, float, int]]) -> Callable[[Means], np.ndarray]:
    """The mean retained headroom over units, each (unit, pruned arm, dense arm, floor, examples), as a statistic
    of statistics.bootstrap_means' per-arm means, units as its datasets (so its interval comes from the claims'
    paired bootstrap)."""
    units = list(units)
    return lambda means: sum(retained_headroom(means[unit, pruned], means[unit, dense], floor, n)
                             for unit, pruned, dense, floor, n in units) / len(units)


def write_floor(table: pd.DataFrame, csv_path: str, markdown_path: str, alpha: float) -> None:
    """The floor table as CSV (every column) and Markdown (3 decimals, p-values in full)."""
    write_csv(table, csv_path)
    def shown(form: str):  # "--" where a dataset has no majority label (choices of its own)
        return lambda value: "--" if pd.isna(value) else format(value, form)

    view = table.assign(**{column: table[column].map(shown(".3f")) for column in
                           ("dense_acc", "chance", "majority", "floor")},
                        **{column: table[column].map(shown(".3g")) for column in ("p_chance", "p_majority", "p_holm")},
                        at_floor=table["at_floor"].map({True: "AT FLOOR", False: "above"}),
                        dense_answer=["--" if pd.isna(answer) else f"choice {int(answer)} ({share:.0%})"
                                      for answer, share in zip(table["dense_answer"], table["dense_answer_share"],
                                                               strict=True)])
    view = view.drop(columns=["dense_answer_share"]).rename(columns={
        "dense_acc": "dense", "majority": "majority rate", "p_chance": "p vs chance", "p_majority": "p vs majority",
        "p_holm": "Holm p", "at_floor": "status", "dense_answer": "dense's most frequent answer"})
    title = (f"Floor per model and dataset: the dense model's accuracy against chance (mean of 1 / choices) and the "
             f"majority-label rate (share of the most frequent gold choice), exact one-sided binomial tests; floor = "
             f"the larger; Holm p: of the larger p, over each model's datasets. AT FLOOR (Holm p >= alpha = {alpha}): "
             f"the model is not clearly above chance and the majority label there, so pruning cannot show damage: "
             f"the category averages, the headroom and the claims leave it out.")
    write_markdown(view, markdown_path, title, parse_numbers=False)
