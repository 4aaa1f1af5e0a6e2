"""Tables and figures from result files: dense beside pruned, seeds averaged, stale results refused.

One module (over 400 lines) because its tests share one set of hand-made result files and their builders."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from prunescope import io
from prunescope.config import variant_options
from prunescope.io import ChecksumError
from prunescope.reporting.drops import MissingPerExampleError, category_drop_table, write_category_drop
from prunescope.reporting.figures import plot_accuracy_change
from prunescope.reporting.summary import grid_left_out, run_summary
from prunescope.reporting.tables import StaleResultError, accuracy_table, headline_metrics, load_results, write_table

PARAMS = {"evaluation": {"batch_size": 8}, "limit": 10}
PRUNING = {"calibration_batch_size": 8, "owl": {"m": 5.0, "lambda": 0.08}, "magnitude": {},
           "wanda": {"per_row_alpha": False}, "sparsegpt": {"percdamp": 0.01, "blocksize": 128},
           "ria": {"alpha": 0.5, "per_row": False}}


def write_result(tmp_path, dataset, category, method, acc, calib="none", pattern="unstructured-0.5", params=PARAMS,
                 scores=None, per_example=True, pruning=PRUNING):
    """A result file; its per-example scores are `scores`, else the first round(10 acc) of 10 examples right."""
    if scores is None:
        scores = [1] * round(acc * 10) + [0] * (10 - round(acc * 10))
    metrics = {"acc": acc, "acc_norm": acc, "n": len(scores)}
    if per_example:  # two choices, gold alternating; a wrong example answers the other choice
        gold = [i % 2 for i in range(len(scores))]
        metrics["per_example"] = {"acc": scores, "acc_norm": scores, "n_choices": [2] * len(scores), "gold": gold,
                                  "choice": [g if right else 1 - g for g, right in zip(gold, scores, strict=True)]}
    result = {"model": "m", "dataset": dataset, "category": category, "method": method, "pattern": pattern,
              "calib": calib, "metrics": metrics, "params": params}
    if method != "dense":  # what the evaluate job records of the artifact (pruning_record)
        result["pruning"] = variant_options(method, pattern, pruning)
    path = tmp_path / f"{dataset}-{method}-{pattern}-{calib}.json"
    io.write_result(path, result)
    return str(path)


def scored(tmp_path, dataset, method, scores, calib="none", category="sentiment"):
    """A result file from its per-example scores alone."""
    return write_result(tmp_path, dataset, category, method, sum(scores) / len(scores), calib, scores=scores)


@pytest.fixture
def results(tmp_path):
    paths = [
        write_result(tmp_path, "movies", "sentiment", "dense", 0.8),
        write_result(tmp_path, "movies", "sentiment", "wanda", 0.5, "wiki-raw-n4-l64-s0"),
        write_result(tmp_path, "movies", "sentiment", "wanda", 0.7, "wiki-raw-n4-l64-s1"),
        write_result(tmp_path, "boolq", "qa", "dense", 0.6),
        write_result(tmp_path, "boolq", "qa", "wanda", 0.6, "wiki-raw-n4-l64-s0"),
        write_result(tmp_path, "boolq", "qa", "wanda", 0.5, "wiki-raw-n4-l64-s1"),
    ]
    return load_results(paths, PARAMS, PRUNING)


def test_seeds_are_averaged_beside_the_dense_baseline(results):
    table = accuracy_table(results)
    assert list(table["dataset"]) == ["movies", "boolq"]  # category order: sentiment before qa
    movies = table.iloc[0]
    assert movies["calibration"] == "wiki-raw-n4-l64"
    assert movies["n_seeds"] == 2
    assert movies["acc_mean"] == pytest.approx(0.6)
    assert movies["acc_std"] == pytest.approx(pd.Series([0.5, 0.7]).std())
    assert movies["dense_acc"] == pytest.approx(0.8)
    assert movies["acc_change"] == pytest.approx(-0.2)


def test_headline_metrics_rank_the_sentiment_drop(results):
    metrics = headline_metrics(accuracy_table(results))
    entry = metrics["m"]["wanda_unstructured-0.5_wiki-raw-n4-l64"]
    assert entry["sentiment"] == {"dense": 0.8, "pruned": 0.6, "change": -0.2}
    assert entry["qa"]["change"] == pytest.approx(-0.05)
    assert entry["sentiment_drop_rank"] == 1


def test_truncated_result_is_refused_naming_the_file_and_the_rule(tmp_path):
    truncated = tmp_path / "movies.json"
    truncated.write_text('{"model": "m", "metrics": {"acc": 0.5')
    with pytest.raises(ChecksumError, match=r"movies\.json is not readable JSON .* evaluate rule rebuilds it"):
        load_results([truncated], PARAMS, PRUNING)


def test_edited_result_is_refused_naming_the_file_and_the_rule(tmp_path):
    """An edit that keeps the JSON valid (a better accuracy typed in by hand) breaks the file's own checksum."""
    path = write_result(tmp_path, "movies", "sentiment", "wanda", 0.5)
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text.replace('"acc": 0.5', '"acc": 0.9', 1))
    with pytest.raises(ChecksumError, match=r"wanda.*\.json does not match its own checksum .* evaluate rule"):
        load_results([path], PARAMS, PRUNING)


def test_result_swapped_in_from_another_grid_point_is_refused(tmp_path):
    wanda = write_result(tmp_path, "movies", "sentiment", "wanda", 0.9)
    magnitude = write_result(tmp_path, "movies", "sentiment", "magnitude", 0.5)
    shutil.copyfile(wanda, magnitude)  # checksum intact, but it is wanda's result under magnitude's name
    with pytest.raises(ChecksumError, match=r"magnitude.*\.json was written as .*wanda.* swapped in"):
        load_results([magnitude], PARAMS, PRUNING)


def test_stale_result_is_refused_naming_the_file(tmp_path):
    stale = write_result(tmp_path, "movies", "sentiment", "dense", 0.8, params={"evaluation": {}, "limit": 5})
    with pytest.raises(StaleResultError, match="movies-dense-unstructured-0.5-none.json"):
        load_results([stale], PARAMS, PRUNING)


@pytest.mark.parametrize("method,pattern,changed", [
    ("sparsegpt", "unstructured-0.5", {"sparsegpt": {"percdamp": 0.1, "blocksize": 128}}),
    ("ria", "2of4-0.5", {"ria": {"alpha": 0.5, "per_row": True}}),
    ("wanda", "owl-0.7", {"owl": {"m": 7.0, "lambda": 0.08}}),
])
def test_a_result_of_a_variant_pruned_with_other_options_is_refused(tmp_path, method, pattern, changed):
    """percdamp, blocksize, RIA's alpha and per_row, Wanda's per_row_alpha and OWL's m and lambda are not in the
    variant's path: the options recorded from its artifact must be params.yaml's."""
    stale = write_result(tmp_path, "movies", "sentiment", method, 0.5, pattern=pattern, pruning={**PRUNING, **changed})
    with pytest.raises(StaleResultError, match=rf"{method}-{pattern}-none\.json was evaluated on a variant pruned"):
        load_results([stale], PARAMS, PRUNING)
    assert len(load_results([write_result(tmp_path, "movies", "sentiment", method, 0.5, pattern=pattern)], PARAMS,
                            PRUNING)) == 1


def test_results_carry_their_per_example_scores(results):
    movies = results[(results["dataset"] == "movies") & (results["method"] == "dense")].iloc[0]
    assert movies["acc_per_example"] == movies["acc_norm_per_example"] == [1] * 8 + [0] * 2
    assert movies["path"].endswith("movies-dense-unstructured-0.5-none.json")
    assert movies["gold_per_example"] == [0, 1] * 5 and movies["n_choices_per_example"] == [2] * 10
    assert movies["choice_per_example"] == [0, 1] * 4 + [1, 0]  # the last two wrong: the other choice


def test_identical_dense_and_pruned_change_nothing(tmp_path):
    scores = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    paths = [scored(tmp_path, "movies", "dense", scores)] + [
        scored(tmp_path, "movies", "wanda", scores, f"wiki-raw-n4-l64-s{seed}") for seed in (0, 1)]
    (row,) = category_drop_table(load_results(paths, PARAMS, PRUNING), 1000, 0).itertuples()
    assert (row.calibration, row.datasets, row.seeds, row.n_examples) == ("wiki-raw-n4-l64", 1, 2, 10)
    assert (row.dense_acc, row.acc_mean) == (0.6, 0.6)
    assert (row.acc_change, row.ci_low, row.ci_high) == (0.0, 0.0, 0.0)  # exactly: counts are integers


def test_pruned_wrong_where_dense_was_right_loses_the_dense_accuracy(tmp_path):
    """Pruned gets nothing right, so every resample's change is minus the resampled dense accuracy: the CI is
    the bootstrap interval of -0.6 over 10 examples, about -0.6 -+ 1.96 sqrt(0.6 0.4 / 10) = [-0.9, -0.3]."""
    dense = [1, 1, 1, 0, 1, 0, 1, 0, 1, 0]
    paths = [scored(tmp_path, "movies", "dense", dense), scored(tmp_path, "movies", "magnitude", [0] * 10)]
    (row,) = category_drop_table(load_results(paths, PARAMS, PRUNING), 2000, 0).itertuples()
    assert row.calibration == "none" and row.seeds == 1
    assert row.acc_change == pytest.approx(-0.6)
    assert row.ci_low < -0.6 < row.ci_high
    assert row.ci_low == pytest.approx(-0.9, abs=0.1) and row.ci_high == pytest.approx(-0.3, abs=0.1)
    assert -1 <= row.ci_low and row.ci_high <= 0


def test_category_change_averages_its_datasets_like_the_accuracy_table(results):
    drops = category_drop_table(results, 200, 0)
    assert list(drops["category"]) == ["sentiment", "qa"]
    assert drops["acc_change"].tolist() == pytest.approx([-0.2, -0.05])
    assert drops["dense_acc"].tolist() == pytest.approx([0.8, 0.6])
    assert (drops["ci_low"] <= drops["acc_change"]).all() and (drops["acc_change"] <= drops["ci_high"]).all()


def test_bootstrap_is_deterministic_per_seed(results):
    first, second = category_drop_table(results, 500, 0), category_drop_table(results, 500, 0)
    pd.testing.assert_frame_equal(first, second)
    other = category_drop_table(results, 500, 1)
    assert not first[["ci_low", "ci_high"]].equals(other[["ci_low", "ci_high"]])
    pd.testing.assert_frame_equal(first.drop(columns=["ci_low", "ci_high"]), other.drop(columns=["ci_low", "ci_high"]))
    # a row's interval depends on its own results only, not on which other rows the table holds
    only_qa = results[results["category"] == "qa"]
    assert category_drop_table(only_qa, 500, 0).iloc[0].equals(first.iloc[1])


def test_disagreeing_seeds_widen_the_interval(tmp_path):
    """Dense is always right. With agreeing seeds (each half right) only the examples vary. Seed 0 always right
    and seed 1 always wrong give the same mean change -0.5 and no example variance at all, but resampling the
    two seeds draws {0, 0}, {1, 1} or one of each (1/4, 1/4, 1/2): changes 0, -1, -0.5, so the CI is [-1, 0]."""
    half = [1, 0] * 10
    paths = [scored(tmp_path, "movies", "dense", [1] * 20)]
    paths += [scored(tmp_path, "movies", "wanda", half, f"agree-raw-n4-l64-s{seed}") for seed in (0, 1)]
    paths += [scored(tmp_path, "movies", "wanda", [1] * 20, "split-raw-n4-l64-s0"),
              scored(tmp_path, "movies", "wanda", [0] * 20, "split-raw-n4-l64-s1")]
    agree, split = category_drop_table(load_results(paths, PARAMS, PRUNING), 1000, 0).itertuples()
    assert (agree.calibration, split.calibration) == ("agree-raw-n4-l64", "split-raw-n4-l64")
    assert agree.acc_change == split.acc_change == -0.5
    assert (split.ci_low, split.ci_high) == (-1.0, 0.0)
    assert 0 < agree.ci_high - agree.ci_low < split.ci_high - split.ci_low


def test_bootstrap_over_many_datasets_brackets_the_change(tmp_path):
    """1000 iterations over 7 datasets of 64 examples, 2 seeds (its speed, ~0.03 s, is not asserted here)."""
    paths = []
    for d in range(7):
        paths.append(scored(tmp_path, f"d{d}", "dense", [int((i * 7 + d) % 3 > 0) for i in range(64)], category="qa"))
        paths += [scored(tmp_path, f"d{d}", "wanda", [int((i * 5 + d + s) % 4 > 0) for i in range(64)],
                         f"wiki-raw-n4-l64-s{s}", category="qa") for s in (0, 1)]
    results = load_results(paths, PARAMS, PRUNING)
    (row,) = category_drop_table(results, 1000, 0).itertuples()
    assert (row.datasets, row.n_examples) == (7, 448) and row.ci_low < row.acc_change < row.ci_high


def test_zero_iterations_give_no_interval(results, tmp_path):
    """evaluation.bootstrap_iters 0 skips the bootstrap: the changes stay, the intervals are missing."""
    drops = category_drop_table(results, 0, 0)
    assert drops["acc_change"].tolist() == pytest.approx([-0.2, -0.05]) and drops["ci_low"].isna().all()
    write_category_drop(drops, tmp_path / "d.csv", tmp_path / "d.md", tmp_path / "d.tex", iterations=0)
    assert "| -- " in (tmp_path / "d.md").read_text()
    plot_accuracy_change(drops, tmp_path / "d.png", tmp_path / "d.svg")


def test_result_without_per_example_scores_is_a_clear_error(tmp_path):
    paths = [scored(tmp_path, "movies", "dense", [1, 0]),
             write_result(tmp_path, "movies", "sentiment", "wanda", 0.5, per_example=False)]
    results = load_results(paths, PARAMS, PRUNING)  # the accuracy table needs none
    assert accuracy_table(results)["acc_change"].tolist() == [0.0]
    with pytest.raises(MissingPerExampleError, match=r"movies-wanda-unstructured-0\.5-none\.json has no per-example "
                                                     r".*snakemake --forcerun evaluate_dense evaluate_pruned"):
        category_drop_table(results, 100, 0)


def test_table_and_figure_files_are_byte_stable(results, tmp_path):
    table, drops = accuracy_table(results), category_drop_table(results, 1000, 0)
    outputs = []
    for run in ("a", "b"):
        paths = [tmp_path / f"{run}{suffix}" for suffix in (".csv", ".md", ".tex", "_drop.csv", "_drop.md",
                                                            "_drop.tex", ".png", ".svg")]
        write_table(table, *paths[:3])
        write_category_drop(category_drop_table(results, 1000, 0), *paths[3:6], iterations=1000)
        plot_accuracy_change(drops, paths[6], paths[7])
        outputs.append([p.read_bytes() for p in paths])
    assert outputs[0] == outputs[1]
    text = [output.decode() for output in outputs[0][:6]]
    assert "| movies " in text[1]
    assert "\\toprule" in text[2] and "\\bottomrule" in text[2] and "wiki-raw-n4-l64" in text[2]
    assert "-0.200" in text[2] and "--" not in text[2].split("\\midrule")[1]  # two seeds: every std given
    assert text[3].splitlines()[0] == ("model,method,pattern,calibration,category,datasets,left_out,seeds,n_examples,"
                                       "dense_acc,acc_mean,acc_change,ci_low,ci_high,headroom,headroom_low,"
                                       "headroom_high")
    assert "95% CI" in text[4] and "| sentiment " in text[4] and "(1000 iterations)" in text[4]
    assert "95\\% CI" in text[5] and "\\toprule" in text[5]
    assert outputs[0][6][:4] == b"\x89PNG" and b"<svg" in outputs[0][7]


def test_figure_reads_the_written_table_and_draws_chosen_variants(results, tmp_path):
    write_category_drop(category_drop_table(results, 200, 0), tmp_path / "d.csv", tmp_path / "d.md",
                        tmp_path / "d.tex", iterations=200)
    table = pd.read_csv(tmp_path / "d.csv", keep_default_na=False, na_values=[""])
    plot_accuracy_change(table, tmp_path / "all.png", tmp_path / "all.svg")
    plot_accuracy_change(table, tmp_path / "some.png", tmp_path / "some.svg",
                         variants=[("m", "wanda", "unstructured-0.5", "wiki-raw-n4-l64-s0")])
    assert (tmp_path / "all.svg").read_bytes() == (tmp_path / "some.svg").read_bytes()  # the same one variant
    plot_accuracy_change(table, tmp_path / "none.png", tmp_path / "none.svg", variants=[])
    assert (tmp_path / "none.svg").read_bytes() != (tmp_path / "all.svg").read_bytes()


def test_nsa_tables_join_drops_with_accuracy_and_guided_with_plain(tmp_path):
    from prunescope.reporting.nsa import (
        LAYER_SHARE_COLUMNS,
        OVERLAP_COLUMNS,
        NsaTables,
        causal_table,
        drop_correlation,
        drop_table,
        guided_table,
        nsa_metrics,
        pairing_table,
        plot_causal_curve,
        plot_guided,
        plot_heatmap,
        plot_pairing,
        write_markdown,
    )

    paths = [write_result(tmp_path, "movies", "sentiment", "dense", 0.8),
             write_result(tmp_path, "boolq", "qa", "dense", 0.6)]
    compare = []
    for i, (method, acc) in enumerate([("magnitude", 0.5), ("wanda", 0.7), ("ria", 0.75)]):
        paths.append(write_result(tmp_path, "movies", "sentiment", method, acc))
        paths.append(write_result(tmp_path, "boolq", "qa", method, 0.55))
        result = {"model": "m", "dataset": "movies", "method": method, "pattern": "unstructured-0.5", "calib": "none",
                  "pairs": 4, "mean_relative_drop": 0.6 - 0.2 * i, "weighted_relative_drop": 0.1 * i,
                  "semantic_retention": 0.5,
                  "groups": {"negative": {"pairs": 3, "fraction_dropped": 1 / 3},
                             "positive": {"pairs": 1, "fraction_dropped": 1.0}},
                  "example": {"tokens": ["a", " great", " film"], "key_tokens": [1], "dense": [0.1, 2.0, 0.0],
                              "pruned": [0.1, 0.4 + i, 0.0], "layer": 3, "neuron": 9, "word": "great"}}
        io.write_result(tmp_path / f"{method}.json", result)
        compare.append(str(tmp_path / f"{method}.json"))
    results = load_results(paths, PARAMS, PRUNING)
    drops = drop_table(compare, results)
    assert list(drops["method"]) == ["magnitude", "ria", "wanda"]
    assert list(drops["acc_drop"]) == pytest.approx([0.3, 0.05, 0.1])
    assert drops["fraction_dropped"].tolist() == pytest.approx([0.5] * 3)
    # by hand: drops (0.6, 0.2, 0.4) against accuracy drops (0.3, 0.05, 0.1): r = 0.05 / sqrt(0.08 * 0.035)
    assert drop_correlation(drops)["pearson"] == pytest.approx(0.9449, abs=1e-4)

    (tmp_path / "g").mkdir()
    guided_paths = [write_result(tmp_path / "g", "movies", "sentiment", "wanda", 0.8),
                    write_result(tmp_path / "g", "boolq", "qa", "wanda", 0.5)]
    guided = load_results(guided_paths, PARAMS, PRUNING).assign(protect="sentiment")
    table = guided_table(results, guided, 2000, seed=0)
    assert table[["category", "plain_acc", "guided_acc"]].values.tolist() == [["sentiment", 0.7, 0.8],
                                                                             ["qa", 0.55, 0.5]]
    assert table["recovered"].tolist() == pytest.approx([0.1, -0.05])
    # sentiment: one example of 10 flips to right. A paired resample's change is (times it is drawn) / 10,
    # Binomial(10, 0.1) / 10: P(<= 2) = 0.930 < 0.975 < P(<= 3) = 0.987, so the interval is [0, 0.3]
    assert table[["ci_low", "ci_high"]].values.tolist()[0] == pytest.approx([0.0, 0.3])
    no_guided = guided_table(results, guided.iloc[:0], 2000, seed=0)
    assert no_guided.empty
    plot_guided(no_guided, tmp_path / "guided.png", tmp_path / "guided.svg")  # a grid without nsa_guided
    assert b"no NSA-guided variants" in (tmp_path / "guided.svg").read_bytes()
    assert drop_correlation(drops, "weighted_relative_drop")["pearson"] == pytest.approx(
        float(np.corrcoef([0.0, 0.2, 0.1], [0.3, 0.05, 0.1])[0, 1]), abs=1e-4)

    point = lambda k, ablation, matched: {  # noqa: E731
        "k": k, "ablation": ablation, "matched_margin_change": matched, "matched_acc_change": matched / 10,
        "random_margin_change": {"mean": -0.1, "low": -0.3, "high": 0.0},
        "random_acc_change": {"mean": 0.0, "low": -0.02, "high": 0.01}, "matched": {"3": [9]}}
    pairs = lambda k, matched, other: {  # noqa: E731
        "k": k, "matched": matched, "random": {"mean": 0.01, "low": -0.02, "high": 0.05}, "other_group": other,
        "important": 0.1}
    pairing = {"positive": {"occurrences": 5, "effect": 2.0, "curve": [pairs(1, 0.6, 0.0), pairs(2, 0.9, 0.95)]},
               "negative": {"occurrences": 3, "effect": 1.0, "curve": [pairs(1, 0.04, None)]}}
    causal_path = tmp_path / "results/nsa/m/movies/causal.json"
    causal_path.parent.mkdir(parents=True)
    io.write_result(causal_path, {"dataset": "movies", "examples": 8, "acc": 0.8, "margin": 1.2, "curve": [
        point(1, "zero", -0.2), point(1, "mean", -0.1), point(2, "zero", -1.0), point(2, "mean", -0.5)],
        "pairing": pairing})
    causal = causal_table([str(causal_path)])
    assert causal["beyond_random"].tolist() == [False, False, True, True]  # below the random interval's low end
    paired = pairing_table([str(causal_path)])
    assert paired[["model", "group", "k"]].values.tolist() == [["m", "negative", 1], ["m", "positive", 1],
                                                               ["m", "positive", 2]]
    # specific: matched above the random interval, the other group's set (where there is one) and the salient one
    assert paired["specific"].tolist() == [False, True, False]
    tables = NsaTables(drops, causal, paired, table, pd.DataFrame(columns=LAYER_SHARE_COLUMNS),
                       pd.DataFrame(columns=OVERLAP_COLUMNS))
    metrics = nsa_metrics(tables)
    assert metrics["pairing"]["m movies"]["positive"] == {
        "k": 2, "occurrences": 5, "matched": 0.9, "random": 0.01, "random_low": -0.02, "random_high": 0.05,
        "other_group": 0.95, "important": 0.1, "specific": False}
    assert metrics["pairing"]["m movies"]["negative"]["other_group"] is None
    plot_pairing(paired, tmp_path / "p.png", tmp_path / "p.svg")
    assert b"positive words" in (tmp_path / "p.svg").read_bytes()
    write_markdown(tables, tmp_path / "nsa.md")
    assert "## The pairing test" in (tmp_path / "nsa.md").read_text()
    assert metrics["causal"]["movies"]["zero"] == {
        "k": 2, "matched_margin_change": -1.0, "random_margin_change": -0.1, "random_margin_interval": [-0.3, 0.0],
        "matched_acc_change": -0.1, "random_acc_change": 0.0, "beyond_random": True}
    assert metrics["guided_sentiment_wanda_unstructured-0.5_none"]["sentiment"]["recovered"] == pytest.approx(0.1)
    assert metrics["guided_sentiment_wanda_unstructured-0.5_none"]["sentiment"]["recovered_interval"] == [0.0, 0.3]
    plot_causal_curve(causal, tmp_path / "c.png", tmp_path / "c.svg")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    plot_heatmap([json.loads(open(p).read()) for p in compare], tmp_path / "h.png", tmp_path / "h.svg")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_nsa_layer_shares_sum_the_matched_neurons_exact_effects_per_group_and_layer(tmp_path):
    """By hand: negative ("bad") has two patched occurrences, |effect| 2 + 1 = 3; its matched neurons give
    layer 3: 0.5 + 0.25 (neuron 7), layer 5: 0.3 - 0.1 (neuron 2); neuron 9 of layer 3 was patched but not
    matched, and (3, 7) is matched to "bad" only, so it does not count for "good". The -1 nats occurrence's exact
    effects are stored already oriented by its sign (nsa.mediation): added as they are, not flipped again. The same
    neurons patched at the last prompt token alone ("last") give layer 3: 0.4 + 0.2, layer 5: 0.0 - 0.1; "good"'s
    neuron carries nothing there (it reads the word at its own position). The paper's matching made (bad, 3, 7),
    which mediated matching made too, and two pairs it did not: one of three pairs both, carrying 0.5 of 1.5 nats."""
    from prunescope.reporting.nsa import NsaTables, layer_share_table, nsa_metrics, paper_overlap_table, write_markdown

    mediated = tmp_path / "results/nsa/m/movies/association.json"
    paper = tmp_path / "results/nsa/m/boolq/association.json"
    for path in (mediated, paper):
        path.parent.mkdir(parents=True)
    match = lambda word, group, layer, neuron: {  # noqa: E731
        "word": word, "group": group, "layer": layer, "neuron": neuron, "share": 0.5, "exact": 0.5}
    io.write_result(mediated, {
        "vocabulary": ["bad", "good"], "groups": ["negative", "positive"], "matching": "mediated",
        "matches": [match("bad", "negative", 3, 7), match("bad", "negative", 5, 2), match("good", "positive", 3, 1)],
        "occurrences": [
            {"example": 0, "word": "bad", "positions": [4], "effect": 2.0,
             "exact": [[3, 7, 0.5], [5, 2, 0.3], [3, 9, 0.8]], "last": [[3, 7, 0.4], [5, 2, 0.0], [3, 9, 0.7]]},
            {"example": 1, "word": "bad", "positions": [2], "effect": -1.0, "exact": [[3, 7, 0.25], [5, 2, -0.1]],
             "last": [[3, 7, 0.2], [5, 2, -0.1]]},
            {"example": 0, "word": "good", "positions": [6], "effect": 4.0, "exact": [[3, 1, 1.0], [3, 7, 2.0]],
             "last": [[3, 1, 0.0], [3, 7, 1.5]]}],
        "paper_matches": [["bad", 3, 7], ["bad", 3, 9], ["good", 5, 4]]})
    io.write_result(paper, {"vocabulary": ["bad"], "groups": ["negative"], "matching": "paper",
                            "matches": [match("bad", "negative", 3, 7)], "occurrences": []})

    table = layer_share_table([str(mediated.with_suffix(".safetensors")), str(paper)])
    assert table[["model", "dataset", "group", "layer", "neurons", "occurrences"]].values.tolist() == [
        ["m", "movies", "negative", 3, 1, 2], ["m", "movies", "negative", 5, 1, 2],
        ["m", "movies", "positive", 3, 1, 1]]
    assert table["share"].tolist() == pytest.approx([0.75 / 3, 0.2 / 3, 1.0 / 4])
    assert table["effect"].tolist() == pytest.approx([1.5, 1.5, 4.0])
    assert table["share_last_token"].tolist() == pytest.approx([0.6 / 3, -0.1 / 3, 0.0])
    assert layer_share_table([str(paper)]).empty  # paper matching patches nothing
    older = tmp_path / "results/nsa/m/tweets/association.json"  # written before the position split
    older.parent.mkdir(parents=True)
    written = io.read_result(mediated, "nsa_association")
    io.write_result(older, {**written, "occurrences": [{key: value for key, value in o.items() if key != "last"}
                                                       for o in written["occurrences"]]})
    assert layer_share_table([str(older)])["share_last_token"].isna().all()
    overlap = paper_overlap_table([str(mediated.with_suffix(".safetensors")), str(paper)])
    assert overlap.drop(columns="mediated_effect_found").values.tolist() == [["m", "movies", 3, 3, 1]]
    assert overlap["mediated_effect_found"].tolist() == pytest.approx([1 / 3])
    empty = pd.DataFrame()
    tables = NsaTables(empty.assign(weighted_relative_drop=[], mean_relative_drop=[], acc_drop=[]), empty, empty,
                       empty, table, overlap)
    metrics = nsa_metrics(tables)
    assert metrics["layer_share"]["m movies"] == {"negative": {"3": 0.25, "5": 0.0667}, "positive": {"3": 0.25}}
    assert metrics["layer_share_last_token"]["m movies"] == {"negative": {"3": 0.2, "5": -0.0333},
                                                             "positive": {"3": 0.0}}
    assert metrics["paper_overlap"]["m movies"] == {"mediated_pairs": 3, "paper_pairs": 3, "both": 1,
                                                    "mediated_effect_found": 0.3333}
    write_markdown(tables, tmp_path / "nsa.md")
    text = (tmp_path / "nsa.md").read_text()
    assert "## The paper's matching beside mediated matching (dense)" in text
    assert "## Where the matched neurons carry the words' effect, by layer and position (dense)" in text
    assert "share_last_token" in text and "| positive |" in text


def test_run_summary_states_each_variants_numbers_and_where_the_reports_are(tmp_path, monkeypatch):
    """Hand-made report tables: the summary names the category hurt most (least headroom kept), perplexity as a
    multiple of dense averaged over calibration seeds (x3 and x5 -> x4.00), guided and unlisted variants left out,
    NSA's verdicts, and the grid's own reports folder (where its tables are)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/quick/tables").mkdir(parents=True)
    drop_rows = [("wanda", "gensim-raw-n8-l64", "sentiment", -0.30, 0.2),
                 ("wanda", "gensim-raw-n8-l64", "qa", -0.05, 0.9),
                 ("magnitude", "none", "sentiment", -0.10, 0.7), ("magnitude", "none", "qa", -0.20, 0.4),
                 ("ria", "none", "qa", -0.9, 0.0)]  # not a studied variant: left out
    pd.DataFrame([{"model": "m", "method": method, "pattern": "unstructured-0.5", "calibration": calibration,
                   "category": category, "datasets": 1, "acc_change": change, "ci_low": change - 0.01,
                   "ci_high": change + 0.01, "headroom": headroom}
                  for method, calibration, category, change, headroom in drop_rows]).to_csv(tmp_path / "drop.csv",
                                                                                          index=False)
    pd.DataFrame([{"model": "m", "category": category, "dataset": dataset, "at_floor": False}
                  for category, dataset in (("sentiment", "reviews"), ("qa", "boolq"))]).to_csv(tmp_path / "floor.csv",
                                                                                               index=False)
    pd.DataFrame([{"model": "m", "category": "qa", "dataset": "boolq", "method": "wanda", "pattern": "unstructured-0.5",
                   "calibration": "gensim-raw-n8-l64", "n_seeds": 2, "dense_constant": False, "constant_seeds": 0}]
                 ).to_csv(tmp_path / "accuracy.csv", index=False)
    ppl_rows = [("dense", "", "", None, 10.0), ("wanda", "unstructured-0.5", "gensim-raw-n8-l64-s0", None, 30.0),
                ("wanda", "unstructured-0.5", "gensim-raw-n8-l64-s1", None, 50.0),
                ("wanda", "unstructured-0.5", "gensim-raw-n8-l64-s0", "sentiment", 20.0),  # guided: left out
                ("magnitude", "unstructured-0.5", "none", None, 200.0)]
    pd.DataFrame([{"model": "m", "method": method, "pattern": pattern, "calib": calib, "protect": protect,
                   "source": "heldout", "perplexity": ppl, "ratio": ppl / 10.0}
                  for method, pattern, calib, protect, ppl in ppl_rows]).to_csv(tmp_path / "ppl.csv", index=False)
    pd.DataFrame([{"model": "m", "dataset": "reviews", "method": "wanda", "pattern": "unstructured-0.5",
                   "calib": f"gensim-raw-n8-l64-s{seed}", "weighted_relative_drop": share}  # seeds averaged: 0.25
                  for seed, share in ((0, 0.2), (1, 0.3))]).to_csv(tmp_path / "nsa.csv", index=False)
    pairing = {"k": 4, "occurrences": 16, "matched": 0.62, "random": 0.01, "other_group": None, "important": 0.05,
               "specific": True}
    (tmp_path / "nsa.json").write_text(json.dumps({"causal": {"reviews": {"mean": {"beyond_random": True}}},
                                                   "pairing": {"m reviews": {"positive": pairing}}}))
    studied = [("m", "wanda", "unstructured-0.5", "gensim-raw-n8-l64-s0"), ("m", "wanda", "unstructured-0.5",
                                                                         "gensim-raw-n8-l64-s1"),
               ("m", "magnitude", "unstructured-0.5", "none")]
    for name in ("drop.csv", "floor.csv", "accuracy.csv"):
        (tmp_path / name).rename(tmp_path / "reports/quick/tables" / name)
    tables = [f"reports/quick/tables/{name}" for name in ("drop.csv", "floor.csv", "accuracy.csv")]

    text = run_summary("quick", *tables, studied, str(tmp_path / "ppl.csv"), str(tmp_path / "nsa.csv"),
                       str(tmp_path / "nsa.json"))

    assert ("- m wanda unstructured-0.5 (gensim-raw-n8-l64): sentiment -0.300 (headroom kept 0.20), qa -0.050 "
            "(headroom kept 0.90); hurt most: sentiment") in text
    assert ("- m magnitude unstructured-0.5 (none): sentiment -0.100 (headroom kept 0.70), qa -0.200 (headroom kept "
            "0.40); hurt most: qa") in text
    assert "ria" not in text
    assert "- Every dataset is above floor" in text and "Every category change below has a 95% interval" in text
    assert "one label" not in text and "same choice" not in text
    assert ("- m on heldout: dense 10.0; pruned / dense: wanda unstructured-0.5 x4.00, "
            "magnitude unstructured-0.5 x20.00") in text
    assert ("effect lost (weighted): wanda unstructured-0.5 0.25; ablating the matched neurons moves the margin "
            "beyond") in text
    assert ("  - pairing test, positive words (16 occurrences, K = 4): their matched neurons carry 0.62 of their "
            "effect; random neurons of the same layers 0.01, the other groups' none, the most salient 0.05\n") in text
    assert "reports/quick/tables/" in text and "reports/tables/" not in text and "reports/quick/report.html" in text
    no_extras = run_summary("quick", *tables, studied, None, None, None)
    assert "Perplexity" not in no_extras and "Neuron Semantic" not in no_extras and "Left out" not in no_extras
    grid = {"models": ["m", "big"], "exclude": [{"model": "big", "source": "lee"}], "nsa_models": ["m"],
            "nsa_datasets": ["reviews"]}
    budget = run_summary("quick", *tables, studied, None, None, None, grid_left_out(grid))
    assert ("- Left out of this grid for its compute budget (grids.quick): variants with model big, source lee; "
            "NSA on m only.\n") in budget.split("## Accuracy")[0]  # read before any number
