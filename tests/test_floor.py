"""Floors against known truth: a planted dataset where the dense model is at chance answering one label, one clearly
above it; binomial p-values by hand; retained headroom by hand; claims and the summary leaving the floor out."""

from math import comb

import numpy as np
import pandas as pd
import pytest

from prunescope.reporting import floor
from prunescope.reporting.claims import Settings, accuracy
from prunescope.reporting.drops import category_drop_table, retained_headroom, write_category_drop
from prunescope.reporting.figures import plot_accuracy_change
from prunescope.reporting.summary import run_summary
from prunescope.reporting.tables import accuracy_table, headline_metrics, write_table

CALIB = "wiki-raw-n8-l64"
SETTINGS = Settings(alpha=0.05, power=0.8, bootstrap_iters=999, seed=0, high_sparsity=0.6)
# flat (nli, 3 choices): gold 9 x 0, 12 x 1, 9 x 2, so chance 1/3 and majority 0.4; dense always answers 0 (0.3)
FLAT_GOLD = [0] * 9 + [1] * 12 + [2] * 9
ALTERNATING = [i % 2 for i in range(30)]  # 2 choices, majority 0.5


def answers(gold: list[int], wrong: int, n_choices: int = 2) -> list[int]:
    """The model's answers: right except on the first `wrong` examples, where it gives the next choice."""
    return [(g + 1) % n_choices if i < wrong else g for i, g in enumerate(gold)]


def row(dataset: str, category: str, method: str, choice: list[int], gold: list[int], n_choices: int,
        calib: str = "none", model: str = "m") -> dict:
    """One row of load_results' frame, its scores derived from the answers."""
    acc = [int(c == g) for c, g in zip(choice, gold, strict=True)]
    return {"model": model, "category": category, "dataset": dataset, "method": method,
            "pattern": "unstructured-0.5", "calib": calib, "n_examples": len(gold), "acc": sum(acc) / len(acc),
            "acc_norm": sum(acc) / len(acc), "protect": None, "path": f"{model}-{dataset}-{method}-{calib}.json",
            "acc_per_example": acc, "acc_norm_per_example": acc, "choice_per_example": choice,
            "gold_per_example": gold, "n_choices_per_example": [n_choices] * len(gold)}


def planted(pruned_clear_wrong: int = 6, pruned_other_wrong: int = 3, qa_at_floor: bool = False) -> pd.DataFrame:
    """Dense: at floor on flat (nli, constant answer 0), 27 of 30 right on clear (sentiment) and on other (qa).
    wanda: flat flips to the constant answer 1, a "gain" of 0.1; clear and other lose examples. qa_at_floor: other
    (qa) is a copy of flat."""
    rows = [row("flat", "nli", "dense", [0] * 30, FLAT_GOLD, 3),
            row("flat", "nli", "wanda", [1] * 30, FLAT_GOLD, 3, f"{CALIB}-s0"),
            row("clear", "sentiment", "dense", answers(ALTERNATING, 3), ALTERNATING, 2),
            row("clear", "sentiment", "wanda", answers(ALTERNATING, pruned_clear_wrong), ALTERNATING, 2,
                f"{CALIB}-s0"),
            row("other", "qa", "dense", answers(ALTERNATING, 3), ALTERNATING, 2),
            row("other", "qa", "wanda", answers(ALTERNATING, pruned_other_wrong), ALTERNATING, 2, f"{CALIB}-s0")]
    if qa_at_floor:
        rows[4:] = [{**flat, "dataset": "other", "category": "qa"} for flat in rows[:2]]
    return pd.DataFrame(rows)


def upper_tail(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k), summed by hand."""
    return sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_chance_and_majority_rates_by_hand():
    assert floor.chance_rate([2, 4]) == pytest.approx(0.375)  # (1/2 + 1/4) / 2
    assert floor.majority_rate(FLAT_GOLD) == pytest.approx(0.4)
    assert floor.majority_rate([2, 2, 0]) == pytest.approx(2 / 3)


def test_binomial_p_values_match_a_hand_computation():
    # 27 of 30 against 1/2: (C(30,27) + C(30,28) + C(30,29) + C(30,30)) / 2^30 = 4526 / 2^30
    assert floor.p_above(27, 30, 0.5) == pytest.approx(4526 / 2 ** 30, rel=1e-9)
    assert floor.p_above(12, 30, 1 / 3) == pytest.approx(upper_tail(12, 30, 1 / 3), rel=1e-9)
    assert floor.p_above(3, 10, 1.0) == 1.0  # every gold label the same: nothing beats the majority


def test_floor_table_marks_the_chance_level_constant_answerer_and_keeps_the_clear_one():
    table = floor.floor_table(planted(), alpha=0.05).set_index("dataset")
    flat, clear = table.loc["flat"], table.loc["clear"]
    assert (flat["dense_acc"], flat["chance"], flat["majority"], flat["floor"]) == pytest.approx((0.3, 1 / 3, 0.4, 0.4))
    assert flat["p_chance"] == pytest.approx(upper_tail(9, 30, 1 / 3), rel=1e-9)
    assert flat["p_majority"] == pytest.approx(upper_tail(9, 30, 0.4), rel=1e-9)
    assert flat["at_floor"] and (flat["dense_answer"], flat["dense_answer_share"]) == (0, 1.0)
    assert not clear["at_floor"] and clear["floor"] == 0.5
    # Holm over the model's 3 datasets of max(p vs chance, p vs majority): clear and other tie at p = 4526 / 2^30,
    # stepped to 3p and 2p, and the running maximum makes both 3p
    assert clear["p_holm"] == pytest.approx(3 * 4526 / 2 ** 30, rel=1e-9)
    assert flat["p_holm"] == pytest.approx(flat["p_majority"])


def test_a_dataset_with_choices_of_its_own_has_chance_as_its_floor_and_no_constant_answer():
    """timedial's gold answer is always the third of its own list, which the model never sees (each choice is scored
    as a continuation): 'always the third' is no answer a model can give, so 20 of 30 right over 3 choices is above
    floor (against chance 1/3), where the index majority (1.0) would bury it; its answers are never 'one label'."""
    gold, choice = [2] * 30, [2] * 20 + [0] * 10
    results = pd.DataFrame([row("timedial", "qa", "dense", choice, gold, 3), row("timedial", "qa", "wanda", [2] * 30,
                                                                                  gold, 3, f"{CALIB}-s0")])
    by_index = floor.floor_table(results, 0.05).iloc[0]
    assert by_index["majority"] == 1.0 and by_index["at_floor"]
    own = floor.floor_table(results, 0.05, own_choices={"timedial"}).iloc[0]
    assert pd.isna(own["majority"]) and own["floor"] == pytest.approx(1 / 3) and not own["at_floor"]
    assert own["p_holm"] == pytest.approx(upper_tail(20, 30, 1 / 3), rel=1e-9)
    assert floor.answer_shares(results)["constant"].tolist() == [False, True]  # by position wanda always says "2"
    assert floor.answer_shares(results, own_choices={"timedial"}).empty


def test_only_datasets_whose_examples_differ_in_choices_have_choices_of_their_own():
    """strategyqa offers Yes / No on every example (a constant answer is possible: it has a majority label); timedial
    offers each example its own phrases."""
    yes_no = [{"choices": ["Yes", "No"], "label": i % 2} for i in range(4)]
    phrases = [{"choices": [f"{i} days", f"{i} hours", "never"], "label": 2} for i in range(4)]
    assert floor.own_choice_datasets({"strategyqa": yes_no, "timedial": phrases}) == {"timedial"}


def test_holm_runs_over_each_models_datasets_alone():
    """A second model at floor everywhere does not change the first model's adjusted p-values."""
    one = floor.floor_table(planted(), 0.05)
    other = pd.DataFrame([row(d, c, "dense", [0] * 30, FLAT_GOLD, 3, model="z")
                          for d, c in (("flat", "nli"), ("clear", "sentiment"), ("other", "qa"))])
    both = floor.floor_table(pd.concat([planted(), other], ignore_index=True), 0.05)
    assert both[both["model"] == "m"]["p_holm"].tolist() == one["p_holm"].tolist()
    assert both[both["model"] == "z"]["at_floor"].all()


def test_a_barely_significant_dataset_falls_to_floor_after_holm():
    """20 of 30 right against 1/2 is p = 0.049 alone, but Holm over two such datasets makes both 2p > 0.05."""
    gold = ALTERNATING
    rows = [row("a", "sentiment", "dense", answers(gold, 10), gold, 2),
            row("b", "qa", "dense", answers(gold, 10), gold, 2)]
    table = floor.floor_table(pd.DataFrame(rows), 0.05)
    assert table["p_chance"].tolist() == pytest.approx([upper_tail(20, 30, 0.5)] * 2)
    assert 0.045 < table["p_chance"][0] < 0.05 and table["p_holm"].tolist() == pytest.approx(
        [2 * upper_tail(20, 30, 0.5)] * 2) and table["at_floor"].all()


def test_constant_answers_are_flagged_at_95_percent():
    gold = ALTERNATING
    rows = [row("clear", "sentiment", "wanda", [1] * 29 + [0], gold, 2, f"{CALIB}-s0"),  # 29 / 30 = 0.967: flagged
            row("clear", "sentiment", "wanda", [1] * 28 + [0, 0], gold, 2, f"{CALIB}-s1")]  # 0.933: not
    shares = floor.answer_shares(pd.DataFrame(rows))
    assert shares["share"].tolist() == pytest.approx([29 / 30, 28 / 30])
    assert shares["constant"].tolist() == [True, False] and shares["answer"].tolist() == [1, 1]


def test_results_without_answers_are_a_clear_error_naming_the_rerun():
    old = pd.DataFrame([row("clear", "sentiment", "dense", ALTERNATING, ALTERNATING, 2)]).assign(
        choice_per_example=[None])
    with pytest.raises(floor.MissingAnswersError, match=r"m-clear-dense-none\.json has no per-example answers.*"
                                                        r"snakemake --forcerun evaluate_dense evaluate_pruned"):
        floor.floor_table(old, 0.05)
    with pytest.raises(floor.MissingAnswersError, match="rerun the evaluate rules"):
        floor.answer_shares(old)


def test_retained_headroom_by_hand():
    assert retained_headroom(0.7, 0.9, 0.5, 30) == pytest.approx(0.5)  # (0.7 - 0.5) / (0.9 - 0.5)
    assert retained_headroom(0.4, 0.9, 0.5, 30) == pytest.approx(-0.25)  # below the floor: negative
    # a bootstrap draw whose dense accuracy falls to the floor counts one example of headroom (1 / n)
    draws = retained_headroom(np.array([0.6, 0.5]), np.array([0.9, 0.5]), 0.5, 10)
    assert draws.tolist() == pytest.approx([0.25, 0.0])


def test_category_drop_leaves_the_floor_out_and_measures_headroom():
    results = planted()
    floors = floor.floor_table(results, 0.05)
    drops = category_drop_table(results, 500, 0, floors).set_index("category")
    nli = drops.loc["nli"]
    assert nli["datasets"] == 0 and nli["left_out"] == "flat" and np.isnan(nli["acc_change"])
    sentiment = drops.loc["sentiment"]
    assert sentiment["acc_change"] == pytest.approx(-0.1) and sentiment["left_out"] == ""
    assert sentiment["headroom"] == pytest.approx((0.8 - 0.5) / (0.9 - 0.5))
    assert sentiment["headroom_low"] < 0.75 < sentiment["headroom_high"] <= 1.0
    # without the floors, the constant answer's flip reads as nli's gain
    assert category_drop_table(results, 0, 0).set_index("category").loc["nli", "acc_change"] == pytest.approx(0.1)


def test_tables_figure_and_metrics_show_the_floor(tmp_path):
    results = planted()
    floors = floor.floor_table(results, 0.05)
    table = accuracy_table(results, floors, floor.answer_shares(results))
    flat = table.set_index("dataset").loc["flat"]
    assert flat["at_floor"] and flat["dense_constant"] and flat["constant_seeds"] == 1
    write_table(table, tmp_path / "a.csv", tmp_path / "a.md", tmp_path / "a.tex")
    markdown = (tmp_path / "a.md").read_text()
    assert "AT FLOOR; dense answers one label" in markdown and "[one label: 1 of 1]" in markdown
    floor.write_floor(floors, tmp_path / "f.csv", tmp_path / "f.md", 0.05)
    assert pd.read_csv(tmp_path / "f.csv")["at_floor"].tolist() == [False, True, False]  # sentiment, nli, qa
    assert "| AT FLOOR " in (tmp_path / "f.md").read_text()
    metrics = headline_metrics(table)["m"]
    assert metrics["at_floor"] == ["flat"] and metrics[f"wanda_unstructured-0.5_{CALIB}"]["nli"] == {"at_floor": True}
    drops = category_drop_table(results, 200, 0, floors)
    write_category_drop(drops, tmp_path / "d.csv", tmp_path / "d.md", tmp_path / "d.tex", 200)
    assert "| flat " in (tmp_path / "d.md").read_text()
    plot_accuracy_change(pd.read_csv(tmp_path / "d.csv", keep_default_na=False, na_values=[""]), tmp_path / "d.png",
                         tmp_path / "d.svg")
    svg = (tmp_path / "d.svg").read_text()
    assert "at floor" in svg and "m nli: flat" in svg


def test_sentiment_claim_compares_headroom_without_the_at_floor_dataset():
    """Sentiment keeps 0.25 of its headroom (0.6 vs dense 0.9 over 0.5), qa 1.0; flat (nli) is left out, so nli's
    constant-answer "gain" cannot make sentiment look hurt most, and the row says so."""
    results = planted(pruned_clear_wrong=12, pruned_other_wrong=3)
    floors = floor.floor_table(results, 0.05)
    (found,) = accuracy.sentiment_hurt_most(results, CALIB, "mini", SETTINGS, floors)
    assert found.effect == pytest.approx(0.25 - 1.0) and "qa" in found.comparison
    assert found.unit == "retained headroom" and found.note == "left out as at floor: nli: flat"
    # with qa at floor too, nothing is left to compare sentiment with: not tested, saying why
    qa_flat = planted(qa_at_floor=True)
    rows = accuracy.sentiment_hurt_most(qa_flat, CALIB, "mini", SETTINGS, floor.floor_table(qa_flat, 0.05))
    assert [r.note for r in rows] == ["not tested: no other category dataset is above floor (left out as at floor: "
                                      "nli: flat; qa: other; reports/tables/floor.md)"]


def test_sentiment_claim_is_pooled_over_models_beside_each_model():
    second = planted(pruned_clear_wrong=12).assign(model="z", path=lambda d: "z-" + d["path"])
    results = pd.concat([planted(pruned_clear_wrong=12), second], ignore_index=True)
    rows = accuracy.sentiment_hurt_most(results, CALIB, "mini", SETTINGS, floor.floor_table(results, 0.05))
    assert [r.scope for r in rows] == [f"m wanda unstructured-0.5 {CALIB}", f"z wanda unstructured-0.5 {CALIB}",
                                       f"all 2 models wanda unstructured-0.5 {CALIB}"]
    assert rows[2].effect == pytest.approx(rows[0].effect)  # the same data twice: the same headroom gap
    assert rows[2].note == "left out as at floor: nli: m flat, z flat"


def test_summary_names_the_floor_before_any_number(tmp_path):
    results = planted()
    floors = floor.floor_table(results, 0.05)
    floor.write_floor(floors, tmp_path / "f.csv", tmp_path / "f.md", 0.05)
    write_table(accuracy_table(results, floors, floor.answer_shares(results)), tmp_path / "a.csv", tmp_path / "a.md",
                tmp_path / "a.tex")
    write_category_drop(category_drop_table(results, 500, 0, floors), tmp_path / "d.csv", tmp_path / "d.md",
                        tmp_path / "d.tex", 500)
    variants = [("m", "wanda", "unstructured-0.5", f"{CALIB}-s0")]
    text = run_summary("quick", str(tmp_path / "d.csv"), str(tmp_path / "f.csv"), str(tmp_path / "a.csv"), variants,
                       None, None, None)
    lines = text.splitlines()
    first_number = next(i for i, line in enumerate(lines) if "-0.100" in line)
    assert lines[2] == "## Read this first" and "At floor" in lines[3] and "m: flat (nli)" in lines[3]
    assert first_number > 3
    assert "No dataset above floor, so no numbers for: m nli." in text
    assert "m dense on flat" in text and f"m wanda unstructured-0.5 ({CALIB}) on flat (1 of 1 seeds)" in text
    caveats = "\n".join(lines[:first_number])
    assert "interval includes zero" in caveats and "qa" in caveats.split("interval includes zero")[1]
    assert (f"- m wanda unstructured-0.5 ({CALIB}): sentiment -0.100 (headroom kept 0.75), nli at floor, "
            f"qa +0.000 (headroom kept 1.00); hurt most: sentiment") in text
