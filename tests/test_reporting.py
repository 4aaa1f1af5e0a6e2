"""Tables and figures from result files: dense beside pruned, seeds averaged, stale results refused."""

import json

import pandas as pd
import pytest

from prunescope.reporting.figures import plot_accuracy_change
from prunescope.reporting.tables import StaleResultError, accuracy_table, headline_metrics, load_results, write_table

PARAMS = {"evaluation": {"batch_size": 8}, "limit": 10}


def write_result(tmp_path, dataset, category, method, acc, calib="none", pattern="unstructured-0.5", params=PARAMS):
    result = {"model": "m", "dataset": dataset, "category": category, "method": method, "pattern": pattern,
              "calib": calib, "metrics": {"acc": acc, "acc_norm": acc, "n": 10}, "params": params}
    path = tmp_path / f"{dataset}-{method}-{calib}.json"
    path.write_text(json.dumps(result))
    return str(path)


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
    return load_results(paths, PARAMS)


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


def test_stale_result_is_refused_naming_the_file(tmp_path):
    stale = write_result(tmp_path, "movies", "sentiment", "dense", 0.8, params={"evaluation": {}, "limit": 5})
    with pytest.raises(StaleResultError, match="movies-dense-none.json"):
        load_results([stale], PARAMS)


def test_table_and_figure_files_are_byte_stable(results, tmp_path):
    table = accuracy_table(results)
    outputs = []
    for run in ("a", "b"):
        paths = [tmp_path / f"{run}.csv", tmp_path / f"{run}.md", tmp_path / f"{run}.png", tmp_path / f"{run}.svg"]
        write_table(table, paths[0], paths[1])
        plot_accuracy_change(table, paths[2], paths[3])
        outputs.append([p.read_bytes() for p in paths])
    assert outputs[0] == outputs[1]
    assert "| movies " in outputs[0][1].decode()
    assert outputs[0][2][:4] == b"\x89PNG"


def test_nsa_tables_join_drops_with_accuracy_and_guided_with_plain(tmp_path):
    from prunescope.reporting.nsa import drop_correlation, drop_table, guided_table, nsa_metrics, plot_heatmap

    paths = [write_result(tmp_path, "movies", "sentiment", "dense", 0.8),
             write_result(tmp_path, "boolq", "qa", "dense", 0.6)]
    compare = []
    for i, (method, acc) in enumerate([("magnitude", 0.5), ("wanda", 0.7), ("ria", 0.75)]):
        paths.append(write_result(tmp_path, "movies", "sentiment", method, acc))
        paths.append(write_result(tmp_path, "boolq", "qa", method, 0.55))
        result = {"model": "m", "dataset": "movies", "method": method, "pattern": "unstructured-0.5", "calib": "none",
                  "pairs": 4, "mean_relative_drop": 0.6 - 0.2 * i, "semantic_retention": 0.5,
                  "groups": {"negative": {"pairs": 3, "fraction_dropped": 1 / 3},
                             "positive": {"pairs": 1, "fraction_dropped": 1.0}},
                  "example": {"tokens": ["a", " great", " film"], "key_tokens": [1], "dense": [0.1, 2.0, 0.0],
                              "pruned": [0.1, 0.4 + i, 0.0], "layer": 3, "neuron": 9, "word": "great"}}
        (tmp_path / f"{method}.json").write_text(json.dumps(result))
        compare.append(str(tmp_path / f"{method}.json"))
    results = load_results(paths, PARAMS)
    drops = drop_table(compare, results)
    assert list(drops["method"]) == ["magnitude", "ria", "wanda"]
    assert list(drops["acc_drop"]) == pytest.approx([0.3, 0.05, 0.1])
    assert drops["fraction_dropped"].tolist() == pytest.approx([0.5] * 3)
    # by hand: drops (0.6, 0.2, 0.4) against accuracy drops (0.3, 0.05, 0.1): r = 0.05 / sqrt(0.08 * 0.035)
    assert drop_correlation(drops)["pearson"] == pytest.approx(0.9449, abs=1e-4)

    (tmp_path / "g").mkdir()
    guided_paths = [write_result(tmp_path / "g", "movies", "sentiment", "wanda", 0.8),
                    write_result(tmp_path / "g", "boolq", "qa", "wanda", 0.5)]
    guided = load_results(guided_paths, PARAMS).assign(protect="sentiment")
    table = guided_table(results, guided)
    assert table[["category", "plain_acc", "guided_acc"]].values.tolist() == [["sentiment", 0.7, 0.8],
                                                                             ["qa", 0.55, 0.5]]
    assert table["recovered"].tolist() == pytest.approx([0.1, -0.05])
    metrics = nsa_metrics(drops, pd.DataFrame(columns=["dataset", "matched_change", "random_change"]), table)
    assert metrics["guided_sentiment_wanda_unstructured-0.5_none"]["sentiment"]["recovered"] == pytest.approx(0.1)
    plot_heatmap([json.loads(open(p).read()) for p in compare], tmp_path / "h.png", tmp_path / "h.svg")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
