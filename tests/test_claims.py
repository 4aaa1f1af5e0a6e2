"""The claims table against known truth: planted effects, planted nulls, and hand-computed Holm, McNemar and
sample-size figures, with statsmodels as an independent oracle for Holm and McNemar."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from prunescope.io import write_result
from prunescope.reporting import claims, floor, statistics
from prunescope.reporting.claims import Row, Settings, accuracy, proxies, report
from prunescope.reporting.claims.rows import BOOTSTRAP, MCNEMAR

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(alpha=0.05, power=0.8, bootstrap_iters=1999, seed=0, high_sparsity=0.6)
MODEL = "m"
DATASETS = {"sst": "sentiment", "imdb": "sentiment", "rte": "nli", "mrpc": "similarity", "boolq": "qa"}
N = 200
CALIB = "wiki-raw-n8-l64"


def scores(correct: int, n: int = N, shift: int = 0) -> list[int]:
    """n 0/1 scores with `correct` ones, rotated by `shift` (which examples are right)."""
    return np.roll(np.r_[np.ones(correct, int), np.zeros(n - correct, int)], shift).tolist()


def result(dataset: str, method: str, values: list[int], pattern: str = "unstructured-0.5", calib: str = "none",
           protect: str | None = None) -> dict:
    """One row of load_results' frame: two choices, gold alternating, a wrong example answering the other one."""
    gold = [i % 2 for i in range(len(values))]
    return {"model": MODEL, "category": DATASETS[dataset], "dataset": dataset, "method": method, "pattern": pattern,
            "calib": calib, "n_examples": len(values), "acc": float(np.mean(values)), "acc_norm": np.nan,
            "protect": protect, "path": f"{dataset}.json", "acc_per_example": values, "acc_norm_per_example": values,
            "gold_per_example": gold, "n_choices_per_example": [2] * len(values),
            "choice_per_example": [g if right else 1 - g for g, right in zip(gold, values, strict=True)]}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def pruned_run(correct: dict[str, int]) -> pd.DataFrame:
    """Dense gets 180 of 200 right on every dataset; magnitude gets `correct[dataset]` right, its errors on examples
    the dense model also got wrong first (the same rotation)."""
    rows = [result(d, "dense", scores(180)) for d in DATASETS]
    rows += [result(d, "magnitude", scores(correct[d])) for d in DATASETS]
    return frame(rows)


def floors(run: pd.DataFrame) -> pd.DataFrame:
    return floor.floor_table(run, SETTINGS.alpha)


def verdicts(rows: list[Row]) -> list[str]:
    return list(claims.claims_table(rows, SETTINGS)["verdict"])


# ------------------------------------------------------------------------- hand computations


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert statistics.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_holm_matches_statsmodels():
    """An independent implementation as the oracle, on p-values with ties, ones and a cap."""
    rng = np.random.default_rng(3)
    for pvalues in ([0.01, 0.04, 0.03, 0.005], [0.02, 0.02, 0.5, 1.0, 0.001], rng.uniform(0, 0.2, 30).tolist()):
        assert statistics.holm(pvalues) == pytest.approx(multipletests(pvalues, method="holm")[1], rel=1e-12)


def test_mcnemar_exact_matches_a_hand_computation():
    x = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 5  # 8 examples only x gets right, 2 only y, 10 concordant
    y = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 5
    assert statistics.mcnemar_p(x, y) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 P(Bin(10, 1/2) <= 2)
    assert statistics.mcnemar_p([1, 0], [1, 0]) == 1.0


def test_mcnemar_exact_matches_statsmodels():
    """statsmodels' exact McNemar on the 2x2 table of (x, y) as the oracle, balanced and lopsided discordance."""
    rng = np.random.default_rng(5)
    for n, p_x, p_y in ((40, 0.5, 0.5), (200, 0.7, 0.55), (60, 0.9, 0.2), (30, 0.95, 0.95)):
        x, y = (rng.random(n) < p_x).astype(int), (rng.random(n) < p_y).astype(int)
        table = [[int(((x == a) & (y == b)).sum()) for b in (1, 0)] for a in (1, 0)]
        assert statistics.mcnemar_p(x, y) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_examples_needed_matches_the_paired_difference_formula():
    z = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}
    assert statistics.examples_needed(0.05, 0.03, 100, 0.05, 0.8) == math.ceil(100 * (z * 0.03 / 0.05) ** 2) == 283
    # a paired 0/1 difference, discordant shares 0.15 and 0.10: var(d) = 0.25 - 0.05^2, se^2 = var(d) / n, so the
    # textbook n = (z_a + z_b)^2 var(d) / delta^2 = 7.8489 x 99 = 777.04 whatever n the se was measured at
    assert statistics.examples_needed(0.05, math.sqrt(0.2475 / 100), 100, 0.05, 0.8) == 778
    assert statistics.examples_needed(0.0, 0.03, 100, 0.05, 0.8) is None


def test_points_needed_is_fishers_z():
    assert statistics.points_needed(0.3, 0.05, 0.8) == 85  # (2.8016 / atanh 0.3)^2 + 3 = 84.9: the usual table's 85
    assert statistics.points_needed(0.0, 0.05, 0.8) is None


def test_bootstrap_standard_error_of_a_paired_difference_is_the_analytic_one():
    """x right on 60% and y on 40% of 400 examples, discordant on 30% + 10%: se = sqrt((0.4 - 0.2^2) / 400)."""
    n = 400
    x = np.r_[np.ones(120), np.zeros(40), np.ones(120), np.zeros(120)][:, None]
    y = np.r_[np.zeros(120), np.ones(40), np.ones(120), np.zeros(120)][:, None]
    point, draws = statistics.bootstrap_means({"d": {"x": x, "y": y}}, {"x": ("a",), "y": ("b",)}, 4000,
                                          np.random.default_rng(0))
    measured = statistics.measure(statistics.mean_difference(["d"], "x", "y"), point, draws, 4000)
    assert measured["effect"] == pytest.approx(0.2)
    assert measured["se"] == pytest.approx(math.sqrt((0.4 - 0.04) / n), rel=0.06)
    assert measured["ci_low"] < 0.2 < measured["ci_high"] and measured["p"] == pytest.approx(2 / 4001)


def test_the_table_applies_holm_and_gives_the_data_needed_at_alpha_over_m():
    rows = [Row("c", "a", expected="positive", effect=0.2, se=0.05, n=100, p=0.001),
            Row("c", "b", expected="positive", effect=-0.2, se=0.05, n=100, p=0.004),
            Row("c", "c", expected="positive", effect=0.03, se=0.02, n=100, p=0.2),
            Row("c", "d", note="not tested: the grid has no x")]
    table = claims.claims_table(rows, SETTINGS)
    assert list(table["verdict"]) == ["supported", "contradicted", "inconclusive", "not tested"]
    assert table["p_holm"].tolist()[:3] == pytest.approx([0.003, 0.008, 0.2])
    z = 2.393980 + 0.841621  # z_{1 - 0.05 / 3 / 2} + z_{0.8}: the level is alpha over the 3 tests
    assert table["resolve_n"][2] == math.ceil(100 * (z * 0.02 / 0.03) ** 2)
    assert table["resolve_unit"][2] == "examples per dataset" and pd.isna(table["resolve_n"][0])


# ------------------------------------------------------------------------- planted effects, per claim


def test_sentiment_hurt_most_planted_large_effect_is_supported():
    run = pruned_run({"sst": 60, "imdb": 70, "rte": 175, "mrpc": 172, "boolq": 178})
    rows = accuracy.sentiment_hurt_most(run, "wiki-raw-n8-l64", "mini", SETTINGS, floors(run))
    assert [r.scope for r in rows] == ["m magnitude unstructured-0.5 none"]
    assert rows[0].effect < -0.4 and rows[0].ci_high < 0 and "similarity" in rows[0].comparison  # the closest
    assert verdicts(rows) == ["supported"]


def test_sentiment_hurt_most_planted_null_is_not_supported():
    run = pruned_run(dict.fromkeys(DATASETS, 160))  # every category loses the same 20 examples
    rows = accuracy.sentiment_hurt_most(run, CALIB, "mini", SETTINGS, floors(run))
    assert rows[0].effect == 0 and verdicts(rows) == ["inconclusive"]
    assert claims.claims_table(rows, SETTINGS)["resolve_n"].isna().all()  # no effect: nothing would resolve it


def test_sentiment_hurt_most_opposite_effect_is_contradicted():
    run = pruned_run({"sst": 179, "imdb": 178, "rte": 60, "mrpc": 175, "boolq": 176})  # nli is hurt most
    rows = accuracy.sentiment_hurt_most(run, CALIB, "mini", SETTINGS, floors(run))
    assert rows[0].effect > 0.4 and "nli" in rows[0].comparison and rows[0].factor == 3
    assert verdicts(rows) == ["contradicted"]


def test_sentiment_hurt_most_small_effect_is_inconclusive_with_the_examples_needed():
    run = pruned_run({"sst": 168, "imdb": 170, "rte": 174, "mrpc": 172, "boolq": 175})
    table = claims.claims_table(accuracy.sentiment_hurt_most(run, CALIB, "mini", SETTINGS, floors(run)), SETTINGS)
    assert table["verdict"][0] == "inconclusive" and table["resolve_n"][0] > N


def calibration_run(shift_lee: int) -> pd.DataFrame:
    """wanda with two calibration sources x two seeds on sst (sentiment) and rte (nli); with gensim_lee, sst gets
    `shift_lee` more examples right than with gensim_wiki."""
    rows = [result(d, "dense", scores(150)) for d in ("sst", "rte")]
    for seed in (0, 1):
        rows += [result("sst", "wanda", scores(100 + seed), calib=f"wiki-raw-n8-l64-s{seed}"),
                 result("sst", "wanda", scores(100 + shift_lee + seed), calib=f"lee-raw-n8-l64-s{seed}"),
                 result("rte", "wanda", scores(120, shift=seed), calib=f"wiki-raw-n8-l64-s{seed}"),
                 result("rte", "wanda", scores(120, shift=seed), calib=f"lee-raw-n8-l64-s{seed}")]
    return frame(rows)


def test_calibration_changes_result_planted_effect_and_null():
    rows = accuracy.calibration_changes_result(calibration_run(60), "mini", SETTINGS)
    assert [r.scope for r in rows] == ["m wanda unstructured-0.5 sentiment", "m wanda unstructured-0.5 nli"]
    assert rows[0].comparison == "lee-raw-n8-l64 - wiki-raw-n8-l64" and rows[0].effect == pytest.approx(0.3)
    assert rows[0].test == BOOTSTRAP  # two seeds a side
    assert verdicts(rows) == ["supported", "inconclusive"]  # nli: the same scores with both sources


def test_calibration_changes_result_uses_exact_mcnemar_for_single_seeds_on_one_dataset():
    run = calibration_run(60)
    run = run[~run["calib"].str.endswith("-s1") & (run["dataset"] == "sst")]
    row = accuracy.calibration_changes_result(run, "mini", SETTINGS)[0]
    assert row.test == MCNEMAR and row.p == pytest.approx(statistics.mcnemar_p(scores(160), scores(100)))


def test_calibration_over_method_at_high_sparsity():
    """Two methods x two calibration sources at 0.7: the source moves sst by 50 examples, the method by 5."""
    rows = [result("sst", "dense", scores(150))]
    for method, offset in (("wanda", 0), ("sparsegpt", 5)):
        for source, level in (("wiki", 60), ("lee", 110)):
            rows.append(result("sst", method, scores(level + offset), pattern="unstructured-0.7",
                               calib=f"{source}-raw-n8-l64-s0"))
    found = accuracy.calibration_over_method(frame(rows), "mini", SETTINGS)
    assert len(found) == 1 and found[0].effect == pytest.approx((50 - 5) / N)
    assert verdicts(found) == ["supported"]
    below = accuracy.calibration_over_method(frame(rows), "mini", Settings(high_sparsity=0.8, bootstrap_iters=99))
    assert verdicts(below) == ["not tested"] and "sparsity >= 0.8" in below[0].note
    assert "grids.mini.patterns" in below[0].note


def test_task_calibration_helps_its_own_task():
    sources = {"wiki": {"kind": "gensim"}, "boolq_train": {"kind": "task", "dataset": "boolq"}}
    rows = [result("boolq", "dense", scores(150)),
            result("boolq", "wanda", scores(140), calib="boolq_train-icl-n8-l64-s0"),
            result("boolq", "wanda", scores(90), calib="wiki-raw-n8-l64-s0"),
            result("boolq", "wanda", scores(10), calib="wiki-raw-n4-l64-s0")]  # another size: not compared
    found = accuracy.task_calibration_helps_own_task(frame(rows), sources, "mini", SETTINGS)
    assert len(found) == 1 and found[0].effect == pytest.approx(0.25) and found[0].test == MCNEMAR
    assert verdicts(found) == ["supported"]
    untested = accuracy.task_calibration_helps_own_task(frame(rows[:1] + rows[2:3]), sources, "mini", SETTINGS)
    assert verdicts(untested) == ["not tested"] and "grids.mini.calibration.sources" in untested[0].note


def test_perplexity_predicts_damage_planted_and_missing():
    ratio = np.arange(1, 9, dtype=float)
    points = pd.DataFrame({"source": "wiki", "category": "sentiment", "ratio": ratio, "acc_change": -0.02 * ratio})
    rows = proxies.perplexity_predicts_damage(points, "mini", SETTINGS)
    assert rows[0].effect == pytest.approx(-1.0) and rows[0].p < 0.002 and verdicts(rows) == ["supported"]
    shuffled = points.assign(acc_change=-0.02 * np.array([3, 8, 1, 6, 2, 7, 4, 5.0]))  # rho = 0.048
    table = claims.claims_table(proxies.perplexity_predicts_damage(shuffled, "mini", SETTINGS), SETTINGS)
    assert table["verdict"][0] == "inconclusive" and table["resolve_unit"][0] == "variants"
    assert table["resolve_n"][0] == statistics.points_needed(table["effect"][0], 0.05, 0.8)
    empty = proxies.perplexity_predicts_damage(points.iloc[:0], "mini", SETTINGS)
    assert verdicts(empty) == ["not tested"] and "grids.mini.perplexity_sources" in empty[0].note


def test_nsa_drop_tracks_accuracy_planted_and_missing():
    drops = pd.DataFrame({"weighted_relative_drop": np.linspace(0.1, 0.8, 8), "acc_drop": np.linspace(0.0, 0.3, 8),
                          "mean_relative_drop": np.linspace(0.8, 0.1, 8)})  # unweighted: noise, not what is tested
    assert verdicts(proxies.nsa_drop_tracks_accuracy(drops, "mini", SETTINGS)) == ["supported"]
    missing = proxies.nsa_drop_tracks_accuracy(None, "mini", SETTINGS)
    assert verdicts(missing) == ["not tested"] and "grids.mini.nsa_datasets" in missing[0].note
    floored = proxies.nsa_drop_tracks_accuracy(drops.iloc[:0], "mini", SETTINGS)  # every NSA dataset at floor
    assert verdicts(floored) == ["not tested"] and "at floor" in floored[0].note


def causal_file(folder: Path, matched_shift: float | None) -> str:
    """A causal.json whose pairing test has 48 occurrences of the positive words: the matched neurons' joint
    effect is matched_shift plus noise on each, each of four random draws' is noise only (None: no group matched)."""
    rng = np.random.default_rng(1)
    pairing = {}
    if matched_shift is not None:
        per_occurrence = {"matched": (matched_shift + 0.3 * rng.standard_normal(48)).tolist(),
                          "random": (0.3 * rng.standard_normal((4, 48))).tolist()}
        pairing = {"positive": {"occurrences": 48, "curve": [{"k": 1}, {"k": 4, "per_occurrence": per_occurrence}]}}
    path = folder / "results/nsa/m/sst/causal.json"
    path.parent.mkdir(parents=True)
    write_result(path, {"dataset": "sst", "pairing": pairing})
    return str(path)


def test_nsa_neurons_causal_planted_effect_and_null(tmp_path):
    row = proxies.nsa_neurons_causal([causal_file(tmp_path / "a", 1.0)], "mini", SETTINGS)[0]
    assert row.scope == "m sst positive words, K = 4" and row.effect == pytest.approx(1.0, abs=0.15)
    assert row.n == 48 and verdicts([row]) == ["supported"]
    null = proxies.nsa_neurons_causal([causal_file(tmp_path / "b", 0.0)], "mini", SETTINGS)
    assert verdicts(null) == ["inconclusive"]
    wrong = proxies.nsa_neurons_causal([causal_file(tmp_path / "c", -1.0)], "mini", SETTINGS)
    assert verdicts(wrong) == ["contradicted"]
    assert verdicts(proxies.nsa_neurons_causal([], "mini", SETTINGS)) == ["not tested"]
    unpaired = proxies.nsa_neurons_causal([causal_file(tmp_path / "d", None)], "mini", SETTINGS)
    assert verdicts(unpaired) == ["not tested"] and "m sst" in unpaired[0].note


def test_nsa_neurons_causal_refuses_a_result_without_a_pairing_test(tmp_path):
    path = tmp_path / "results/nsa/m/sst/causal.json"
    path.parent.mkdir(parents=True)
    write_result(path, {"dataset": "sst", "curve": [{"k": 1, "ablation": "zero"}]})
    with pytest.raises(ValueError, match="no pairing test.*forcerun nsa_causal"):
        proxies.nsa_neurons_causal([str(path)], "mini", SETTINGS)


def test_nsa_guided_recovers_planted_effect_pairs_the_seeds():
    """Seed 0's calibration sample costs 80 examples more than seed 1's, guided or not; guided is 30 above plain
    with either: drawn together, the seeds' spread cancels (drawn apart, the interval would be about +-0.2 wide)."""
    plain = [result(d, "wanda", scores(60 + 80 * seed), calib=f"wiki-raw-n8-l64-s{seed}")
             for d in ("sst", "imdb") for seed in (0, 1)]
    guided = [result(d, "wanda", scores(90 + 80 * seed), calib=f"wiki-raw-n8-l64-s{seed}", protect="sentiment")
              for d in ("sst", "imdb") for seed in (0, 1)]
    rows = accuracy.nsa_guided_recovers(frame(plain), frame(guided), "mini", SETTINGS)
    assert len(rows) == 1 and rows[0].effect == pytest.approx(0.15)
    assert 0.1 < rows[0].ci_low < 0.15 < rows[0].ci_high < 0.2
    assert verdicts(rows) == ["supported"]
    assert verdicts(accuracy.nsa_guided_recovers(frame(plain), frame([]), "mini", SETTINGS)) == ["not tested"]


# ------------------------------------------------------------------------- the whole table and the README


def whole_table(iterations: int = 1999) -> pd.DataFrame:
    run = pd.concat([pruned_run({"sst": 60, "imdb": 70, "rte": 175, "mrpc": 172, "boolq": 178}),
                     calibration_run(60)], ignore_index=True)
    points = pd.DataFrame({"source": "wiki", "category": "qa", "ratio": np.arange(1.0, 5.0),
                           "acc_change": [-0.1, -0.2, -0.15, -0.3]})
    return claims.all_claims(run, frame([]), points, None, [], {}, CALIB, "mini",
                             Settings(bootstrap_iters=iterations), floors(run.iloc[:10]))  # pruned_run's dense


def test_every_claim_has_a_row_and_the_table_is_byte_identical_on_a_rerun(tmp_path):
    table = whole_table()
    assert list(dict.fromkeys(table["claim"])) == list(claims.CLAIMS)
    assert set(table["verdict"]) <= set(claims.VERDICTS)
    untested = table[table["verdict"] == "not tested"]
    assert untested["note"].str.startswith("not tested: ").all()
    written = []
    for name in ("a", "b"):
        paths = [str(tmp_path / f"{name}.{ext}") for ext in ("csv", "md", "json")]
        claims.write_claims(whole_table(), *paths, Settings(bootstrap_iters=1999))
        written.append([Path(path).read_bytes() for path in paths])
    assert written[0] == written[1]
    headline = report.headline(table)
    assert sum(headline["counts"].values()) == len(table)
    assert headline["claims"]["sentiment_hurt_most"]["rows"]["m magnitude unstructured-0.5 none"]["verdict"] == (
        "supported")


def test_readme_findings_block_is_replaced_from_the_table(tmp_path):
    csv = tmp_path / "claims.csv"
    claims.write_claims(whole_table(), str(csv), str(tmp_path / "c.md"), str(tmp_path / "c.json"), SETTINGS)
    table = claims.read_claims(csv)
    readme = f"# x\n\n## Findings\n\n{report.README_START}\nold text\n{report.README_END}\n\nmore\n"
    text = claims.readme_with_findings(readme, table)
    assert "old text" not in text and text.endswith(f"{report.README_END}\n\nmore\n")
    assert "**Sentiment is hurt most by pruning**: 1 supported, 0 contradicted, 1 inconclusive of 2." in text
    assert "not tested: the grid has no NSA-guided pruning" in text
    assert claims.readme_with_findings(text, table) == text
    with pytest.raises(ValueError, match="findings:start"):
        claims.readme_with_findings("# no markers\n", table)


def test_readme_findings_equal_what_the_committed_claims_csv_generates():
    csv = ROOT / report.FINDINGS_SOURCE
    if not csv.exists():
        pytest.skip(f"{report.FINDINGS_SOURCE} is not committed yet: `make models` writes it, then `make findings`")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert claims.readme_with_findings(readme, claims.read_claims(csv)) == readme, "run `make findings`"
