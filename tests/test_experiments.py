"""The sweep and calibration tables from result files: one thing varied at a time from the sweeps' base."""

import pandas as pd
import pytest

from prunescope import io
from prunescope.config import variant_options
from prunescope.reporting.cost import prune_cost_table
from prunescope.reporting.perplexity import VARIANT
from prunescope.reporting.sweeps import (
    accuracy_changes,
    calib_size_table,
    calibration_extremes,
    calibration_headline,
    calibration_table,
    owl_table,
    plot_calibration_heatmap,
    plot_sweep,
    similarity_correlation,
    sparsity_table,
)
from prunescope.reporting.tables import load_results
from test_reporting import PRUNING

PARAMS = {"evaluation": {"batch_size": 8}, "limit": 10}
BASE = {"model": "m", "pattern": "unstructured-0.5", "source": "wiki", "format": "raw", "nsamples": 32,
        "seqlen": 256, "seed": 0}
CALIB = "wiki-raw-n32-l256-s0"


def result(tmp_path, dataset, category, method, acc, pattern="unstructured-0.5", calib="none"):
    path = tmp_path / f"{dataset}-{method}-{pattern}-{calib}.json"
    io.write_result(path, {"model": "m", "dataset": dataset, "category": category, "method": method,
                           "pattern": pattern, "calib": calib, "params": PARAMS,
                           "pruning": variant_options(method, pattern, PRUNING),
                           "metrics": {"acc": acc, "acc_norm": acc, "n": 10}})
    return str(path)


@pytest.fixture
def changes(tmp_path):
    paths = [result(tmp_path, "movies", "sentiment", "dense", 0.8), result(tmp_path, "boolq", "qa", "dense", 0.6)]
    for pattern, drop in (("unstructured-0.3", 0.0), ("unstructured-0.5", 0.1), ("unstructured-0.7", 0.3),
                          ("2of4-0.5", 0.2)):
        paths += [result(tmp_path, "movies", "sentiment", "wanda", 0.8 - drop, pattern, CALIB),
                  result(tmp_path, "boolq", "qa", "wanda", 0.6 - drop / 2, pattern, CALIB)]
    for calib, drop in (("wiki-raw-n8-l256-s0", 0.3), ("wiki-raw-n32-l64-s0", 0.2), ("wiki-raw-n8-l64-s0", 0.5),
                        ("wiki-raw-n32-l256-s1", 0.3), ("lee-raw-n32-l256-s0", 0.0), ("lee-raw-n32-l256-s1", 0.2)):
        paths += [result(tmp_path, "movies", "sentiment", "wanda", 0.8 - drop, calib=calib),
                  result(tmp_path, "boolq", "qa", "wanda", 0.6, calib=calib)]
    paths.append(result(tmp_path, "movies", "sentiment", "magnitude", 0.4))
    paths += [result(tmp_path, "movies", "sentiment", "wanda", 0.8 - 0.2, "owl-0.7", CALIB),  # OWL: 0.1 better
              result(tmp_path, "boolq", "qa", "wanda", 0.6 - 0.15, "owl-0.7", CALIB),
              result(tmp_path, "movies", "sentiment", "wanda", 0.1, "owl-0.7", "wiki-raw-n32-l256-s1")]  # not base
    return accuracy_changes(load_results(paths, PARAMS, PRUNING))


def perplexity_rows(rows) -> pd.DataFrame:
    """What reporting.perplexity.load_perplexity returns, for (method, pattern, calib, protect, perplexity) rows."""
    return pd.DataFrame([{"model": "m", "method": method, "pattern": pattern, "calib": calib, "protect": protect,
                          "source": "heldout", "perplexity": ppl, "windows": 2, "seqlen": 64, "tokens": 128}
                         for method, pattern, calib, protect, ppl in rows],
                        columns=[*VARIANT, "source", "perplexity", "windows", "seqlen", "tokens"])


def test_owl_table_sets_owl_beside_uniform_at_the_base_calibration(changes):
    perplexity = perplexity_rows([("dense", None, None, None, 20.0), ("wanda", "unstructured-0.7", CALIB, None, 40.0),
                                  ("wanda", "owl-0.7", CALIB, None, 30.0),
                                  ("wanda", "owl-0.7", "wiki-raw-n32-l256-s1", None, 99.0),  # not the base sample
                                  ("wanda", "owl-0.7", CALIB, "sentiment", 11.0),  # NSA-guided
                                  ("wanda", "unstructured-0.5", CALIB, None, 25.0)])  # not an OWL sparsity
    table = owl_table(changes, BASE, ["wanda"], [0.7], perplexity).set_index("category")
    assert table.loc["sentiment", ["uniform", "owl", "owl_minus_uniform"]].tolist() == pytest.approx([-0.3, -0.2, 0.1])
    assert table.loc["qa", ["uniform", "owl", "owl_minus_uniform"]].tolist() == pytest.approx([-0.15, -0.15, 0.0])
    assert table["perplexity heldout uniform"].tolist() == [40.0, 40.0]  # beside every category of the variant
    assert table["perplexity heldout owl"].tolist() == [30.0, 30.0]
    assert set(table["method"]) == {"wanda"} and set(table["sparsity"]) == {0.7}
    without = owl_table(changes, BASE, ["wanda"], [0.7], perplexity_rows([]))  # a grid without perplexity sources
    assert not [column for column in without.columns if column.startswith("perplexity")]
    assert set(sparsity_table(changes, BASE, ["wanda"])["sparsity"]) == {0.3, 0.5, 0.7}  # OWL rows not in the sweep


def test_sparsity_sweep_holds_the_base_calibration(changes):
    table = sparsity_table(changes, BASE, ["wanda"])
    sentiment = table[table["category"] == "sentiment"]
    assert sentiment["sparsity"].tolist() == [0.3, 0.5, 0.7]
    assert sentiment["acc_change"].tolist() == pytest.approx([0.0, -0.1, -0.3])
    assert set(table["method"]) == {"wanda"}  # magnitude is not a sweep method here, 2:4 not unstructured


def test_calibration_size_sweep_varies_one_axis_at_a_time(changes):
    table = calib_size_table(changes, BASE, ["wanda"])
    sentiment = table[table["category"] == "sentiment"]
    # n8-l64 varies both axes and the seed-1 sample another seed: neither is on a sweep
    assert sentiment[["nsamples", "seqlen"]].values.tolist() == [[8, 256], [32, 64], [32, 256]]
    assert sentiment["acc_change"].tolist() == pytest.approx([-0.3, -0.2, -0.1])


def test_calibration_table_averages_seeds_and_joins_similarity(changes, tmp_path):
    paths = []
    for calib, cosine in ((CALIB, 0.1), ("wiki-raw-n32-l256-s1", 0.1), ("lee-raw-n32-l256-s0", 0.3),
                          ("lee-raw-n32-l256-s1", 0.3)):
        path = tmp_path / f"sim-{calib}.json"
        io.write_result(path, {"model": "m", "calibration": calib, "datasets": {
            "movies": {"embedding_cosine": cosine}, "boolq": {"embedding_cosine": cosine / 2}}})
        paths.append(str(path))
    table = calibration_table(changes, BASE, paths)
    sentiment = table[table["category"] == "sentiment"].set_index("source")
    assert sentiment.loc["wiki", "acc_change"] == pytest.approx(-0.2)  # seeds 0 and 1: -0.1, -0.3
    assert sentiment.loc["wiki", "acc_change_std"] == pytest.approx(0.1414, abs=1e-4)
    assert sentiment.loc["lee", "acc_change"] == pytest.approx(-0.1)
    assert sentiment.loc["lee", "similarity"] == pytest.approx(0.3) and sentiment.loc["wiki", "seeds"] == 2
    # wiki: sentiment -0.2, qa (-0.05 + 0) / 2; lee: sentiment -0.1, qa 0
    assert calibration_extremes(table) == {"wanda": {"best": {"calibration": "lee-raw", "acc_change": -0.05},
                                                     "worst": {"calibration": "wiki-raw", "acc_change": -0.1125}}}
    correlation = similarity_correlation(changes, BASE, paths)
    assert correlation["n"] == 8 and correlation["pearson"] is not None
    assert calibration_headline(changes, BASE, iter(paths)) == {  # what reports/metrics.json holds
        "calibration": calibration_extremes(table), "calibration_similarity_vs_change": correlation}
    plot_calibration_heatmap(changes, BASE, tmp_path / "h.png", tmp_path / "h.svg")
    plot_sweep(sparsity_table(changes, BASE, ["wanda"]), "sparsity", "sparsity", tmp_path / "s.png",
               tmp_path / "s.svg")
    assert (tmp_path / "h.png").read_bytes()[:4] == (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_headline_of_a_grid_without_calibrated_methods(changes):
    data_free = changes[changes["method"] == "magnitude"]
    assert calibration_headline(data_free, BASE, []) == {
        "calibration": {}, "calibration_similarity_vs_change": {"n": 0, "pearson": None}}


def test_prune_cost_reads_manifest_and_run(tmp_path):
    folder = tmp_path / "wanda"
    folder.mkdir()
    layers = [{"name": f"model.layers.{i}.{kind}", "reconstruction_error": error, "sparsity": 0.5}
              for i, (kind, error) in enumerate([("q_proj", 0.1), ("q_proj", 0.3), ("down_proj", 0.2)])]
    io.write_result(folder / "manifest.json", {
        "model": "m", "method": "wanda", "pattern": "unstructured-0.5", "structure": "unstructured", "sparsity": 0.5,
        "calibration": CALIB, "achieved_sparsity": 0.5, "layers": layers})
    io.write_result(tmp_path / "run.json", {"seconds": 12.345, "peak_memory_bytes": 2**30})
    row = prune_cost_table([str(folder)], [str(tmp_path / "run.json")]).iloc[0]
    assert (row["seconds"], row["peak_memory_gb"], row["achieved_sparsity"]) == (12.3, 1.0, 0.5)
    assert (row["error_q_proj"], row["error_down_proj"]) == pytest.approx((0.2, 0.2))
