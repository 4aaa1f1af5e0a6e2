"""One real run of the workflow on a shrunk embedded default: SmolLM2-135M, one stand-in per category."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["movie_reviews", "strategyqa", "epistemic_reasoning", "similarities_abstraction"]
METHODS = ["magnitude", "wanda", "sparsegpt", "ria"]
PATTERNS = ["unstructured-0.5", "2of4-0.5"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mini = params["grids"]["mini"]
    mini["datasets"] = DATASETS
    mini["methods"] = METHODS
    mini["patterns"] = [{"structure": "unstructured", "sparsity": 0.5}, {"structure": "2:4", "sparsity": 0.5}]
    mini["eval_limit"] = 6
    mini["calibration"].update(nsamples=4, seqlen=64)
    mini["nsa_datasets"] = ["movie_reviews"]
    params["nsa"].update(min_count=1, layers=[0, 15, 29], epochs=100, ablate_neurons=10)
    params["pruning"]["calibration_batch_size"] = 2
    params["evaluation"]["batch_size"] = 8
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", "all"],
        capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-5000:]
    return workdir


def test_accuracy_table_has_dense_beside_every_pruned_result(finished_run):
    with open(finished_run / "reports/tables/accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["dataset"], r["method"], r["pattern"]) for r in rows} == {
        (d, m, p) for d in DATASETS for m in METHODS for p in PATTERNS}
    assert {r["category"] for r in rows} == {"sentiment", "qa", "nli", "similarity"}
    for row in rows:
        assert row["n_examples"] == "6"
        assert 0 <= float(row["dense_acc"]) <= 1 and 0 <= float(row["acc_mean"]) <= 1
        assert float(row["acc_change"]) == pytest.approx(float(row["acc_mean"]) - float(row["dense_acc"]), abs=2e-4)
    markdown = (finished_run / "reports/tables/accuracy.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    assert "dense" in header and "wanda unstructured-0.5" in header and "magnitude unstructured-0.5" in header
    assert all(f"| {d} " in markdown for d in DATASETS)


def test_figure_and_metrics_are_written(finished_run):
    png = finished_run / "reports/figures/accuracy_change.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((finished_run / "reports/metrics.json").read_text())
    wanda = metrics["smollm2-135m"]["wanda_unstructured-0.5_gensim_wiki-raw-n4-l64"]
    assert set(wanda) >= {"sentiment", "qa", "nli", "similarity", "sentiment_drop_rank"}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_method_and_pattern_prunes_half_of_each_layer(finished_run, method, pattern):
    calib = "none" if method == "magnitude" else "gensim_wiki-raw-n4-l64-s0"
    manifest = json.loads((finished_run / f"results/pruned/smollm2-135m/{method}/{pattern}/{calib}/manifest.json")
                          .read_text())
    assert manifest["method"] == method and manifest["sparsity"] == 0.5
    assert len(manifest["layers"]) == 30 * 7  # SmolLM2: 30 blocks x (q, k, v, o, gate, up, down)
    assert all(layer["sparsity"] == 0.5 for layer in manifest["layers"])


def test_results_record_what_made_them(finished_run):
    result = json.loads((finished_run / "results/eval/smollm2-135m/dense/movie_reviews.json").read_text())
    assert result["params"]["limit"] == 6
    assert result["metrics"]["n"] == 6
    assert "torch" in json.dumps(result["environment"])


def test_task_derived_calibration_is_closer_to_its_task_than_wikipedia(finished_run):
    """A cot sample from strategyqa's held-out pool, built by the same rules, and its similarity scores."""
    calib = "strategyqa_train-cot-n4-l64-s0"
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(finished_run), "--cores", "2",
         f"results/similarity/smollm2-135m/{calib}.json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    manifest = json.loads((finished_run / f"data/calibration/smollm2-135m/{calib}.json").read_text())
    assert (manifest["source"], manifest["format"], manifest["n"], manifest["seqlen"]) == ("strategyqa_train", "cot",
                                                                                           4, 64)
    task = json.loads((finished_run / f"results/similarity/smollm2-135m/{calib}.json").read_text())["datasets"]
    wiki = json.loads((finished_run / "results/similarity/smollm2-135m/gensim_wiki-raw-n4-l64-s0.json")
                      .read_text())["datasets"]
    assert set(task) == set(wiki) == set(DATASETS)
    assert task["strategyqa"]["embedding_cosine"] > wiki["strategyqa"]["embedding_cosine"]
    assert task["strategyqa"]["vocab_coverage"] > wiki["strategyqa"]["vocab_coverage"]


def test_nsa_finds_words_and_neurons_and_compares_every_variant(finished_run):
    nsa = finished_run / "results/nsa/smollm2-135m/movie_reviews"
    words = json.loads((nsa / "words.json").read_text())["words"]
    assert words and {w["group"] for w in words.values()} <= {"negative", "positive"}
    association = json.loads((nsa / "association.json").read_text())
    assert association["vocabulary"] == sorted(words) and association["top_words"]
    assert {key.split(":")[0] for key in association["top_words"]} <= {"0", "15", "29"}
    with open(finished_run / "reports/tables/nsa.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["pattern"]) for r in rows} == {(m, p) for m in METHODS for p in PATTERNS}
    assert all(int(r["pairs"]) > 0 and 0 <= float(r["fraction_dropped"]) <= 1 for r in rows)
    compare = json.loads((nsa / "wanda/unstructured-0.5/gensim_wiki-raw-n4-l64-s0.json").read_text())
    example = compare["example"]
    assert len(example["tokens"]) == len(example["dense"]) == len(example["pruned"]) and example["key_tokens"]
    causal = json.loads((nsa / "causal.json").read_text())
    assert causal["neurons_ablated"] == 10
    assert causal["acc"] == pytest.approx(causal["acc_matched_ablated"] - causal["matched_change"])
    metrics = json.loads((finished_run / "reports/nsa.json").read_text())
    assert metrics["drop_vs_accuracy"]["n"] == len(rows) and "movie_reviews" in metrics["causal"]
    assert (finished_run / "reports/figures/nsa/heatmap_smollm2-135m_movie_reviews.png").read_bytes()[:4] == b"\x89PNG"


def test_nsa_guided_pruning_protects_matched_neurons_at_equal_sparsity(finished_run):
    calib = "gensim_wiki-raw-n4-l64-s0"
    guided = finished_run / f"results/guided/pruned/smollm2-135m/sentiment/wanda/unstructured-0.5/{calib}"
    manifest = json.loads((guided / "manifest.json").read_text())
    assert manifest["protected"]["category"] == "sentiment"
    assert set(manifest["protected"]["neurons"]) <= {"0", "15", "29"} and manifest["protected"]["neurons"]
    assert all(layer["sparsity"] == 0.5 for layer in manifest["layers"])
    with open(finished_run / "reports/tables/nsa_guided.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["category"] for r in rows} == {"sentiment", "nli", "similarity", "qa"}
    for row in rows:
        assert float(row["recovered"]) == pytest.approx(float(row["guided_acc"]) - float(row["plain_acc"]), abs=2e-4)


def test_rerun_with_nothing_changed_has_nothing_to_do(finished_run):
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(finished_run), "--cores", "1",
         "--dry-run", "all"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.search(r"Nothing to be done", run.stdout + run.stderr)
