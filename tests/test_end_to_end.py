"""One real run of the workflow on a shrunk embedded default: SmolLM2-135M, one stand-in per category.

One module (over 400 lines) because every test reads the one finished run, built once per session (finished_run),
and pytest-xdist hands a module's tests to one worker (see XDIST_ORDER)."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

import slurm_cluster
from prunescope.glue import browser
from prunescope.io import sha256_file
from prunescope.pruning.artifact import read_manifest
from prunescope.reporting import claims

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["movie_reviews", "strategyqa", "epistemic_reasoning", "similarities_abstraction"]
CATEGORY_OF = dict(zip(DATASETS, ["sentiment", "qa", "nli", "similarity"], strict=True))
# SparseGPT and RIA run the same rule and driver as Wanda (their per-layer rules: tests/test_methods.py, the driver with
# each of them: tests/test_driver.py and tests/test_streamed.py); the run keeps one calibrated method to stay short
METHODS = ["magnitude", "wanda"]
PATTERNS = ["unstructured-0.5", "2of4-0.5"]

pytestmark = pytest.mark.e2e
# `make test` runs pytest-xdist with --dist loadscope: the module's own tests run on one worker (the first of them
# builds the shared run, see finished_run) and the class TestOnClones on the other, so that after the run the two
# halves of the time (SLURM, kill/resume and the report; DVC and task-derived calibration) run side by side.
# conftest hands the module's tests out first and the class last (XDIST_ORDER), so that the other worker runs the
# unit tests while the run is being built. No test changes the shared run: those that rebuild or add outputs work
# on a clone_run.
XDIST_ORDER = 0
FAKE_TOKEN = "hf_prunescopePlantedFakeToken0123456789"  # in the run's environment; must end up nowhere
GIT = ["git", "-c", "user.name=prunescope tests", "-c", "user.email=tests@prunescope.invalid"]


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real Snakefile on `workdir`; fails the test with Snakemake's stderr tail."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
                          *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-5000:]
    return run


def dvc(workdir: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The one finished run every test here reads (and never changes: a test that changes or adds outputs works on
    a clone_run). Built once per test session: with pytest-xdist the workers share it through a file lock in the
    session's common temporary folder, the first one builds it and the others wait for it and reuse it."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    workdir, failed = shared / "e2e", shared / "e2e.failed"
    with FileLock(shared / "e2e.lock"):
        if failed.exists():
            pytest.fail(f"the shared end-to-end run failed (in another worker):\n{failed.read_text()}")
        if not (workdir / "run.out").exists():
            try:
                build_finished_run(workdir)
            except BaseException as err:
                failed.write_text(str(err))
                raise
    return workdir


def shrunk_params() -> dict:
    """params.yaml shrunk for the shared run: 4 datasets, three methods and both patterns, tiny calibration, NSA and
    perplexity (2 windows of 64 tokens)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mini = params["grids"]["mini"]
    mini["datasets"] = DATASETS
    mini["methods"] = METHODS
    mini["patterns"] = [{"structure": "unstructured", "sparsity": 0.5}, {"structure": "2:4", "sparsity": 0.5}]
    mini["eval_limit"] = 6
    mini["calibration"].update(sources=["gensim_wiki"], nsamples=4, seqlen=64, seeds=[0])
    mini["sweeps"] = {"methods": ["wanda"], "sparsities": [0.3], "nsamples": [2], "seqlens": [32]}
    mini["owl"] = {"methods": ["magnitude"], "sparsities": [0.5]}  # one extra variant: owl-0.5 (calibrated)
    mini["nsa_datasets"], mini["nsa_examples"] = ["movie_reviews"], 4
    params["nsa"].update(min_count=1, layers=[0, 15, 29], epochs=100, ablate_neurons=4, random_draws=2, candidates=4,
                         pairing_occurrences=4)
    params["pruning"]["calibration_batch_size"] = 2
    params["evaluation"]["batch_size"] = 8
    params["perplexity"].update(seqlen=64, windows=2, batch_size=2)
    return params


def build_finished_run(workdir: Path) -> None:
    if workdir.exists():  # a build interrupted before it finished: start again
        shutil.rmtree(workdir)
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(shrunk_params(), sort_keys=False))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", "all"],
        capture_output=True, text=True, timeout=1500, env={**os.environ, "HF_TOKEN": FAKE_TOKEN})
    assert run.returncode == 0, run.stderr[-5000:]
    (workdir / "run.out").write_text(run.stdout + run.stderr)  # last: marks the run finished


def floor_rows(run: Path) -> dict[str, dict]:
    """reports/tables/floor.csv by dataset (the run has one model)."""
    with open(run / "reports/tables/floor.csv") as f:
        return {row["dataset"]: row for row in csv.DictReader(f)}


def test_accuracy_table_has_dense_beside_every_pruned_result(finished_run):
    with open(finished_run / "reports/tables/accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["dataset"], r["method"], r["pattern"]) for r in rows} == {
        (d, m, p) for d in DATASETS for m in METHODS for p in PATTERNS} | {
        (d, m, p) for d in DATASETS for m, p in [("wanda", "unstructured-0.3"),  # the sparsity sweep
                                                 ("magnitude", "owl-0.5")]}  # OWL beside uniform
    assert {r["category"] for r in rows} == {"sentiment", "qa", "nli", "similarity"}
    for row in rows:
        assert row["n_examples"] == "6"
        assert 0 <= float(row["dense_acc"]) <= 1 and 0 <= float(row["acc_mean"]) <= 1
        assert float(row["acc_change"]) == pytest.approx(float(row["acc_mean"]) - float(row["dense_acc"]), abs=2e-4)
    markdown = (finished_run / "reports/tables/accuracy.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    assert "dense" in header and "wanda unstructured-0.5" in header and "magnitude unstructured-0.5" in header
    assert all(f"| {d} " in markdown for d in DATASETS)


def test_perplexity_table_lists_dense_and_every_variant(finished_run):
    with open(finished_run / "reports/tables/perplexity.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["source"] for row in rows} == {"gensim_wiki_heldout"}
    dense = [row for row in rows if row["method"] == "dense"]
    assert len(dense) == 1 and float(dense[0]["ratio"]) == 1.0 and 1 < float(dense[0]["perplexity"]) < 1000
    variants = {(r["method"], r["pattern"]) for r in rows if not r["protect"]}
    assert variants >= {(m, p) for m in METHODS for p in PATTERNS}
    assert all(row["windows"] == "2" and row["seqlen"] == "64" for row in rows)
    with open(finished_run / "reports/tables/perplexity_vs_accuracy.csv") as f:
        assert {row["category"] for row in csv.DictReader(f)} == {"sentiment", "qa", "nli", "similarity"}
    metrics = json.loads((finished_run / "reports/metrics.json").read_text())
    assert metrics["perplexity"]["smollm2-135m"]["gensim_wiki_heldout"]["dense"] == pytest.approx(
        float(dense[0]["perplexity"]), rel=1e-3)


def test_figure_and_metrics_are_written(finished_run):
    png = finished_run / "reports/figures/accuracy_change.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((finished_run / "reports/metrics.json").read_text())
    wanda = metrics["accuracy"]["smollm2-135m"]["wanda_unstructured-0.5_gensim_wiki-raw-n4-l64"]
    floors = floor_rows(finished_run)
    assert set(floors) == set(DATASETS)
    for row in floors.values():  # Holm over the model's datasets at claims.alpha decides
        assert (row["at_floor"] == "True") == (float(row["p_holm"]) >= 0.05)
    assert metrics["accuracy"]["smollm2-135m"].get("at_floor", []) == sorted(
        dataset for dataset, row in floors.items() if row["at_floor"] == "True")
    for dataset, category in CATEGORY_OF.items():  # one dataset per category: its floor decides the category
        if floors[dataset]["at_floor"] == "True":
            assert wanda[category] == {"at_floor": True}
        else:
            assert set(wanda[category]) == {"dense", "pruned", "change"}
    assert set(metrics["calibration"]) == set(METHODS[1:])  # the calibrated methods
    assert metrics["calibration"]["wanda"]["best"]["calibration"] == "gensim_wiki-raw"  # the only source


def test_the_run_ends_with_a_summary_of_its_reports(finished_run):
    """reports/summary.md, written last: one line per studied variant whose numbers are category_drop.csv's, the
    perplexity and NSA sections of this grid, and where the reports are."""
    summary = (finished_run / "reports/summary.md").read_text()
    outputs = [path for path in (finished_run / "reports").rglob("*") if path.is_file() and path.name != "summary.md"]
    assert (finished_run / "reports/summary.md").stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in outputs)
    with open(finished_run / "reports/tables/category_drop.csv") as f:
        drops = {(row["method"], row["pattern"], row["category"]): row["acc_change"] for row in csv.DictReader(f)
                 if row["calibration"] in ("none", "gensim_wiki-raw-n4-l64")}
    # before any number, the summary names every at-floor dataset (6 examples leave most of them there), and gives no
    # number for a category whose datasets are all at floor
    floors = floor_rows(finished_run)
    caveats = summary.split("## Read this first")[1].split("## Accuracy change")[0]
    floored = [dataset for dataset, row in floors.items() if row["at_floor"] == "True"]
    assert floored and "At floor" in caveats and all(dataset in caveats for dataset in floored)
    sentiment_floored = floors["movie_reviews"]["at_floor"] == "True"
    for method in METHODS:
        for pattern in PATTERNS:
            start = f"- smollm2-135m {method} {pattern} ("
            line = next(line for line in summary.splitlines() if line.startswith(start))
            change = drops[method, pattern, "sentiment"]
            assert ("sentiment at floor" in line and change == "") if sentiment_floored else (
                f"sentiment {float(change):+.3f}" in line)
    assert "## Perplexity" in summary and "## Neuron Semantic Attribution" in summary and "reports/tables" in summary


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
    assert all(pair["importance"] > 0 for pair in association["matches"])  # matched: carries the word and matters
    causal = json.loads((nsa / "causal.json").read_text())
    assert causal["examples"] == 4 and causal["draws"] == 2
    assert [(p["k"], p["ablation"]) for p in causal["curve"]] == [(k, a) for k in (1, 2, 4) for a in ("zero", "mean")]
    assert all(sum(map(len, p["matched"].values())) == p["k"] for p in causal["curve"])
    assert causal["pairing"] and all(  # the pairing test: every matched group, K up to ablate_neurons
        test["occurrences"] > 0 and len(test["curve"][-1]["per_occurrence"]["random"]) == 2
        for test in causal["pairing"].values())
    metrics = json.loads((finished_run / "reports/nsa.json").read_text())
    assert metrics["drop_vs_accuracy"]["n"] == len(rows) and set(metrics["causal"]["movie_reviews"]) == {"zero", "mean"}
    assert set(metrics["pairing"]["smollm2-135m movie_reviews"]) == set(causal["pairing"])
    for figure in ("heatmap_smollm2-135m_movie_reviews", "causal_curve", "pairing"):
        assert (finished_run / f"reports/figures/nsa/{figure}.png").read_bytes()[:4] == b"\x89PNG"


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


def test_sweeps_and_calibration_tables_follow_the_grid(finished_run):
    with open(finished_run / "reports/tables/sparsity.csv") as f:
        sparsity = list(csv.DictReader(f))
    assert {(r["method"], r["sparsity"]) for r in sparsity} == {("wanda", "0.3000"), ("wanda", "0.5000")}
    with open(finished_run / "reports/tables/calib_size.csv") as f:
        sizes = {(r["nsamples"], r["seqlen"]) for r in csv.DictReader(f)}
    assert sizes == {("2", "64"), ("4", "32"), ("4", "64")}
    with open(finished_run / "reports/tables/calibration.csv") as f:
        calibration = list(csv.DictReader(f))
    assert {(r["method"], r["source"]) for r in calibration} == {(m, "gensim_wiki") for m in METHODS[1:]}
    assert all(r["similarity"] for r in calibration)
    with open(finished_run / "reports/tables/prune_cost.csv") as f:
        cost = list(csv.DictReader(f))
    assert len(cost) == len(METHODS) * len(PATTERNS) + 4 and all(float(r["seconds"]) > 0 for r in cost)
    with open(finished_run / "reports/tables/owl.csv") as f:
        owl = list(csv.DictReader(f))
    assert {(r["method"], r["sparsity"]) for r in owl} == {("magnitude", "0.5000")} and len(owl) == 4  # categories
    assert all(r["uniform"] and r["owl"] for r in owl)
    with open(finished_run / "reports/tables/perplexity.csv") as f:
        ppl = {(r["method"], r["pattern"], r["calib"]): float(r["perplexity"]) for r in csv.DictReader(f)
               if r["source"] == "gensim_wiki_heldout" and not r["protect"]}
    for layer_sparsity, variant in (("uniform", ("magnitude", "unstructured-0.5", "none")),
                                    ("owl", ("magnitude", "owl-0.5", "gensim_wiki-raw-n4-l64-s0"))):
        column = [float(r[f"perplexity gensim_wiki_heldout {layer_sparsity}"]) for r in owl]
        assert column == pytest.approx([ppl[variant]] * len(owl), rel=1e-3)
    manifest = read_manifest(finished_run / "results/pruned/smollm2-135m/magnitude/owl-0.5/gensim_wiki-raw-n4-l64-s0")
    blocks = manifest["layer_sparsity"]["blocks"]
    assert manifest["layer_sparsity"]["kind"] == "owl" and len(blocks) == 30 and len(set(blocks)) > 1
    assert abs(sum(blocks) / len(blocks) - 0.5) < 1e-12  # equal blocks: the plain mean is the weighted one
    for figure in ("calibration_heatmap", "sparsity", "calib_nsamples", "calib_seqlen"):
        assert (finished_run / f"reports/figures/{figure}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_hub_token_in_the_environment_appears_in_no_output(finished_run):
    """Logs, manifests, results, reports, Snakemake's own records and its console output: none holds the token."""
    leaks = [str(path.relative_to(finished_run)) for path in finished_run.rglob("*")
             if path.is_file() and FAKE_TOKEN.encode() in path.read_bytes()]
    assert leaks == []
    assert len(list(finished_run.rglob("*.json"))) > 50  # the search did see the outputs


def test_rerun_with_nothing_changed_has_nothing_to_do(finished_run):
    with in_use(finished_run):
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(finished_run), "--cores",
             "1", "--dry-run", "all"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.search(r"Nothing to be done", run.stdout + run.stderr)


def test_html_report_holds_every_table_and_figure_with_a_caption(finished_run, tmp_path):
    """`snakemake --report` gives one self-contained page; headless Chromium renders it as a reader sees it.
    (The page and its screenshot are written outside the run, which the other tests read at the same time.)"""
    html = tmp_path / "report.html"
    with in_use(finished_run):
        snakemake(finished_run, "--cores", "1", "all", "--report", str(html))
    page = html.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", page), "the report loads remote files"
    expected = ([path.name for path in (finished_run / "reports/figures").rglob("*.png")]
                + [path.name for path in (finished_run / "reports/tables").glob("*.csv")] + ["claims.csv"])
    assert len(expected) >= 14 and all(name in page for name in expected)
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip(f"the HTML is checked; the browser check needs Chromium ({browser.INSTALL_HINT})")
    summary = browser.check_report(html, tmp_path / "report.png", expected)
    assert set(expected) <= {Path(name).name for name in summary["results"]}
    assert {"Accuracy", "Calibration", "NSA", "Pruning cost", "Claims"} <= set(summary["categories"])


def test_claims_table_gives_every_claim_a_verdict(finished_run):
    """reports/claims.{csv,md,json}: a row for every claim; this grid's one calibration source and 50% patterns
    leave the high-sparsity and task-calibration claims untested, each naming what to add."""
    with open(finished_run / "reports/claims.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["claim"] for r in rows] == sorted((r["claim"] for r in rows), key=list(claims.CLAIMS).index)
    assert {r["claim"] for r in rows} == set(claims.CLAIMS) and {r["verdict"] for r in rows} <= set(claims.VERDICTS)
    untested = {r["claim"]: r["note"] for r in rows if r["verdict"] == "not tested"}
    assert "grids.mini.patterns" in untested["calibration_over_method"]
    assert "grids.mini.calibration.sources" in untested["task_calibration_helps_own_task"]
    floors = floor_rows(finished_run)
    above = {CATEGORY_OF[dataset] for dataset, row in floors.items() if row["at_floor"] == "False"}
    if "sentiment" not in above or len(above) < 2:  # nothing left to compare: the row says why
        assert "floor" in untested["sentiment_hurt_most"]
    else:
        assert "sentiment_hurt_most" not in untested
    for claim in ("nsa_neurons_causal",):
        assert claim not in untested and all(0 <= float(r["p_holm"]) <= 1 for r in rows if r["claim"] == claim)
    assert "# Claims: what the data say" in (finished_run / "reports/claims.md").read_text()
    counts = json.loads((finished_run / "reports/claims.json").read_text())["counts"]
    assert sum(counts.values()) == len(rows) and counts["not tested"] == sum(r["verdict"] == "not tested" for r in rows)


LINKED = ("data/models", "data/raw", "data/text", "results/pruned")  # only read by the jobs a clone reruns


def clone_run(finished_run: Path, clone: Path, linked: tuple[str, ...] = LINKED) -> Path:
    """A copy of the finished run, Snakemake's records and every file's times included, that a test may break and
    rebuild without touching the shared run (so nothing has to be rebuilt afterwards to put it back). The big
    inputs the rebuilt jobs only read (`linked`) are hard links; a job never rewrites a file in place (Snakemake
    removes a job's outputs before it runs, the pruning artifact is written to a temporary folder and renamed),
    and a test that changes one of them deletes it first. (DVC replaces a hard-linked output by a fresh copy when
    it commits it, newer than what was made from it: a clone DVC commits has `linked=()`.)"""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem
            shutil.copy2(src, dst)

    with in_use(finished_run):
        shutil.copytree(finished_run, clone, symlinks=True, ignore=lambda folder, names: [
            name for name in names if (Path(folder) / name).relative_to(finished_run).as_posix() in linked])
        for folder in linked:
            if (finished_run / folder).exists():
                shutil.copytree(finished_run / folder, clone / folder, symlinks=True, copy_function=link)
    return clone


def in_use(finished_run: Path) -> FileLock:
    """Held while Snakemake runs on the shared run (even a dry run writes and removes its lock files there) and
    while a clone is copied from it, so that no clone catches those files (tests in other xdist workers)."""
    return FileLock(finished_run.parent / "e2e.in-use.lock")


def outputs_of(workdir: Path, variants: list[str]) -> dict[str, bytes]:
    """Every pruning artifact file and evaluation result of the given variants (model/method/pattern/calib)."""
    files = [path for variant in variants for kind in ("pruned", "eval")
             for path in sorted((workdir / "results" / kind / variant).rglob("*")) if path.is_file()]
    assert files, variants
    return {str(path.relative_to(workdir)): path.read_bytes() for path in files}


def remove_outputs(workdir: Path, variants: list[str], evaluated: bool = True) -> None:
    """The pruning artifact and run record of the given variants, and (unless not `evaluated`) their results."""
    for variant in variants:
        shutil.rmtree(workdir / "results/pruned" / variant)
        if evaluated:
            shutil.rmtree(workdir / "results/eval" / variant)
        (workdir / "results/prune_runs" / f"{variant}.json").unlink()


def copy_sources(project: Path) -> None:
    """The repository's tracked files (code, dvc.yaml, profiles) into a project, less its own params, DVC lock and
    committed reports: the project keeps the run's. Times are kept, so no script looks newer than the outputs."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if not name.startswith("reports/") and name not in ("params.yaml", "dvc.lock") and (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)


def dvc_outputs(project: Path) -> dict[str, tuple[int, str]]:
    """Every file of the DVC outputs (data/, results/, reports/) with its mtime and sha256 (not DVC's .gitignore
    entries for them)."""
    files = sorted(path for folder in ("data", "results", "reports") for path in (project / folder).rglob("*")
                   if path.is_file() and path.name != ".gitignore")
    return {str(path.relative_to(project)): (path.stat().st_mtime_ns, sha256_file(path)) for path in files}


def slurm_test_profile(folder: Path) -> Path:
    """profiles/slurm as a cluster user has it, with the resources the one test node can give (gpu 0 over the
    rules' own gpu=1, CPUs and memory capped at the node's), quick status checks and no retry."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    cpus, memory = slurm_cluster.node_resources()

    def fit(resources: dict) -> dict:
        fitted = {**resources, "gpu": 0}
        fitted["mem_mb"] = min(fitted.get("mem_mb", memory), memory // 2)
        fitted["cpus_per_task"] = min(fitted.get("cpus_per_task", 1), cpus)
        return fitted

    profile["default-resources"] = fit(profile["default-resources"])
    profile["set-resources"] = {rule: fit(resources) for rule, resources in profile["set-resources"].items()}
    profile.update({"slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 2,
                    "latency-wait": 5, "retries": 0})  # the planted failure is not retried (35 s a retry)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def test_slurm_reports_a_failed_job_keeps_the_others_and_a_rerun_finishes(finished_run, tmp_path):
    """On a real single-node SLURM through profiles/slurm: one variant's calibration sample is truncated, so its
    prune job fails (named in Snakemake's report and its log) while another variant is rebuilt and kept; after
    the bad file is deleted, a rerun rebuilds the rest, and everything equals the local run's bytes.
    On a clone of the finished run, not the whole grid again: the jobs are the fine variant's prune, the broken
    variant's sample, prune and evaluation, and one task folder's build_task (deleted as well), which profiles/slurm
    sends as a group job (one SLURM job for a group of rules)."""
    if reason := slurm_cluster.unavailable():
        pytest.skip(reason)
    fine = "smollm2-135m/magnitude/2of4-0.5/none"
    broken = "smollm2-135m/wanda/unstructured-0.5/gensim_wiki-raw-n2-l64-s0"  # the nsamples sweep's own sample
    task = "results/tasks/movie_reviews"  # rule build_task, in group `tasks` of profiles/slurm
    before = outputs_of(finished_run, [fine, broken])
    task_before = {path.relative_to(finished_run): path.read_bytes()
                   for path in sorted((finished_run / task).rglob("*")) if path.is_file()}
    assert task_before
    workdir = clone_run(finished_run, tmp_path / "run")
    remove_outputs(workdir, [fine], evaluated=False)  # its results stay: evaluate_pruned runs for `broken`
    remove_outputs(workdir, [broken])
    shutil.rmtree(workdir / task)
    sample = workdir / "data/calibration/smollm2-135m/gensim_wiki-raw-n2-l64-s0.safetensors"
    truncated = sample.read_bytes()[:-64]
    sample.unlink()  # a new file: never write through to the shared run
    sample.write_bytes(truncated)
    profile = slurm_test_profile(tmp_path)
    targets = [f"results/prune_runs/{fine}.json", *(f"results/eval/{broken}/{dataset}.json" for dataset in DATASETS)]
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
               "--workflow-profile", str(profile), *targets]
    with slurm_cluster.local_slurm(tmp_path / "cluster") as env:
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the jobs run the same venv
        failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        assert failed.returncode != 0
        assert re.search(r"Error in rule prune:", failed.stdout + failed.stderr)
        assert "sample_calibration rule rebuilds it" in (workdir / f"logs/prune/{broken}.log").read_text()
        assert outputs_of(workdir, [fine]) == {k: v for k, v in before.items() if "/magnitude/" in k}
        assert not (workdir / "results/pruned" / broken).exists()
        assert "Group job tasks" in failed.stdout + failed.stderr  # build_task as a SLURM group job
        sample.unlink()
        sample.with_suffix(".json").unlink()
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        assert finished.returncode == 0, finished.stderr[-5000:]
    assert "slurm" in finished.stdout + finished.stderr
    assert outputs_of(workdir, [fine, broken]) == before
    assert {path.relative_to(workdir): path.read_bytes()
            for path in sorted((workdir / task).rglob("*")) if path.is_file()} == task_before


def test_a_killed_run_resumes_and_gives_byte_identical_results(finished_run, tmp_path):
    """SIGKILL the whole run (Snakemake and its job, as a lost node or power cut would) in the middle of a prune
    job: no partial output survives; after `snakemake --unlock` (a killed Snakemake cannot remove its directory
    lock) the same command finishes, the masks, manifest and results equal the uninterrupted run's bytes, and
    Snakemake's records are whole again (nothing left to do). On a clone of the finished run with one variant's
    outputs deleted: only that variant is pruned and scored again, and the shared run stays as it was."""
    variant = "smollm2-135m/wanda/2of4-0.5/gensim_wiki-raw-n4-l64-s0"
    before = outputs_of(finished_run, [variant])
    workdir = clone_run(finished_run, tmp_path / "run")
    remove_outputs(workdir, [variant])
    log = workdir / f"logs/prune/{variant}.log"
    log.unlink()
    targets = [f"results/eval/{variant}/{dataset}.json" for dataset in DATASETS]
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
               "--cores", "2", *targets]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and "block" in log.read_text()):  # the driver is pruning blocks
            assert run.poll() is None and time.monotonic() < deadline, "the prune job never started"
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    pruned_parent = (workdir / "results/pruned" / variant).parent
    assert not (workdir / "results/pruned" / variant).exists()
    assert not (workdir / "results/eval" / variant).exists()
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", *targets)
    assert not [path.name for path in pruned_parent.iterdir() if path.name.startswith(".")]  # no temp left
    assert outputs_of(workdir, [variant]) == before
    plan = snakemake(workdir, "--cores", "1", "--dry-run", *targets)
    assert "Nothing to be done" in plan.stdout + plan.stderr


class TestOnClones:
    """The tests that rebuild outputs, each on a clone of the finished run (pytest-xdist: on the other worker)."""

    XDIST_ORDER = 2

    def test_task_derived_calibration_is_closer_to_its_task_than_wikipedia(self, finished_run, tmp_path):
        """A cot sample from strategyqa's held-out pool, built by the same rules, and its similarity scores (on a
        clone of the finished run)."""
        calib = "strategyqa_train-cot-n4-l64-s0"
        workdir = clone_run(finished_run, tmp_path / "run")
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
             f"results/similarity/smollm2-135m/{calib}.json"], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-5000:]
        manifest = json.loads((workdir / f"data/calibration/smollm2-135m/{calib}.json").read_text())
        assert (manifest["source"], manifest["format"], manifest["n"], manifest["seqlen"]) == (
            "strategyqa_train", "cot", 4, 64)
        task = json.loads((workdir / f"results/similarity/smollm2-135m/{calib}.json").read_text())["datasets"]
        wiki = json.loads((workdir / "results/similarity/smollm2-135m/gensim_wiki-raw-n4-l64-s0.json")
                          .read_text())["datasets"]
        assert set(task) == set(wiki) == set(DATASETS)
        assert task["strategyqa"]["embedding_cosine"] > wiki["strategyqa"]["embedding_cosine"]
        assert task["strategyqa"]["vocab_coverage"] > wiki["strategyqa"]["vocab_coverage"]

    def test_dvc_repro_rebuilds_only_what_changed(self, finished_run, tmp_path):
        """`dvc repro` is incremental (dvc.yaml: persisted outputs, Snakemake decides through its params trigger and
        each rule's library-code digest, stale files removed). On a clone of the finished run, committed to DVC:
        the sparsity sweep's 0.3 becomes 0.4, and `dvc repro` prunes, evaluates and scores the 0.4 variant only and
        rebuilds the reports that list it, every other output keeping its bytes and mtime, and the 0.3 variant's
        files are gone from the DVC outputs; an edit to the unselected paper grid runs no stage; a comment appended
        to an NSA module makes the nsa stage's plan rerun the NSA jobs and no prune job (its plan, not its 3-minute
        run: the first edit checked that a plan is what runs). (The project's own src/ is the code the jobs run.)"""
        project = clone_run(finished_run, tmp_path / "run", linked=())
        copy_sources(project)  # .dvc/config too
        subprocess.run([*GIT, "init", "-q"], cwd=project, check=True)
        dvc(project, "commit", "--force")
        assert "Data and pipelines are up to date" in dvc(project, "status")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "PYTHONPATH": str(project / "src")}  # as `make repro` runs it, on the project's code

        def repro() -> str:
            run = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, capture_output=True,
                                 text=True, timeout=1200)
            assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
            return run.stdout + run.stderr

        params_file = project / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params["grids"]["mini"]["sweeps"]["sparsities"] = [0.4]
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        before = dvc_outputs(project)
        repro()
        after = dvc_outputs(project)
        old, new = (f"smollm2-135m/wanda/unstructured-{s}/gensim_wiki-raw-n4-l64-s0" for s in ("0.3", "0.4"))
        removed, added = before.keys() - after.keys(), after.keys() - before.keys()
        assert removed == {path for path in before if old in path}
        assert added == {path for path in after if new in path}
        for variant_files in (removed, added):
            assert {path.split("/")[1] for path in variant_files} == {"pruned", "prune_runs", "eval", "perplexity"}
        rewritten = {path for path in before.keys() & after.keys() if before[path] != after[path]}
        # the NSA reports, and the power table (dataset sizes and the variant count, both unchanged), stay as they were
        unchanged = ("reports/nsa.json", "reports/tables/nsa", "reports/figures/nsa/", "reports/tables/power.")
        assert rewritten == {path for path in before if path.startswith("reports/") and not path.startswith(
            unchanged)}
        with open(project / "reports/tables/sparsity.csv") as f:
            assert {row["sparsity"] for row in csv.DictReader(f)} == {"0.4000", "0.5000"}
        assert "Data and pipelines are up to date" in dvc(project, "status")
        plan = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "all"], cwd=project,
                              env=env, capture_output=True, text=True, timeout=600)
        assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:] + plan.stderr[-3000:]

        params["grids"]["paper"]["eval_limit"] = 100
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert "Data and pipelines are up to date" in dvc(project, "status")
        assert "Running stage" not in repro()

        with open(project / "src/prunescope/nsa/stages.py", "a") as f:
            f.write("# an edit to NSA code\n")
        changed = json.loads(dvc(project, "status", "--json"))  # the stages `dvc repro` would run
        assert "nsa" in changed and "prune" not in changed, changed
        plan = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "nsa_all"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=600)
        jobs = set(re.findall(r"^(?:local)?rule (\w+):", plan.stdout, re.M))  # the nsa stage's Snakemake jobs
        assert {"nsa_words", "prune_guided"} <= jobs and "prune" not in jobs, plan.stdout[-3000:]

    def test_dvc_round_trip_through_a_local_remote(self, finished_run, tmp_path):
        """The cluster recipe: after the Snakemake run, `dvc commit` and `dvc push` to a local remote; then a fresh git
        clone and `make pull`: `dvc repro` and `snakemake -n` have nothing to do, and a rebuilt table and figure equal
        the pulled ones byte for byte."""
        project, clone = tmp_path / "project", tmp_path / "clone"
        copy_sources(project)
        shutil.copy2(finished_run / "params.yaml", project / "params.yaml")
        for folder in ("reports", "data", "results"):  # what the run made
            shutil.copytree(finished_run / folder, project / folder, symlinks=True)
        subprocess.run([*GIT, "init", "-q"], cwd=project, check=True)
        dvc(project, "commit", "--force")
        dvc(project, "remote", "add", "--default", "local", str(tmp_path / "remote"))
        dvc(project, "push")
        subprocess.run([*GIT, "add", "--all"], cwd=project, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", "a finished run"], cwd=project, check=True)

        subprocess.run([*GIT, "clone", "-q", str(project), str(clone)], check=True)
        assert not (clone / "data").exists() and not (clone / "results").exists()
        venv = Path(sys.executable).parent.parent
        pulled = subprocess.run(["make", "-C", str(clone), "pull", f"VENV={venv}", "-o", f"{venv}/.installed"],
                                capture_output=True, text=True, timeout=900)
        assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-3000:]
        assert "Data and pipelines are up to date" in dvc(clone, "status")
        repro = dvc(clone, "repro")
        assert "Running stage" not in repro and "Data and pipelines are up to date" in repro, repro
        in_clone = [sys.executable, "-m", "snakemake", "--cores", "2"]  # the clone's own Snakefile and profiles
        plan = subprocess.run([*in_clone, "--dry-run", "all"], cwd=clone, capture_output=True, text=True, timeout=600)
        assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:]

        rebuilt = ["reports/tables/accuracy.csv", "reports/tables/category_drop.csv", "reports/metrics.json",
                   "reports/figures/accuracy_change.png", "reports/figures/accuracy_change.svg"]
        pulled_bytes = {name: (clone / name).read_bytes() for name in rebuilt}
        subprocess.run([*in_clone, "all", "--forcerun", "aggregate", "plot_accuracy_change"], cwd=clone, check=True,
                       capture_output=True, timeout=600)
        assert {name: (clone / name).read_bytes() for name in rebuilt} == pulled_bytes

    def test_dvc_metrics_and_plots_diff_across_two_param_settings(self, finished_run, tmp_path):
        """Commit the reports of this grid, drop the 2:4 pattern from params.yaml, rebuild: only the report rules run,
        and DVC shows the params, metrics and plots changes between the commit and the workspace (on a clone of the
        finished run: the rebuilt reports and the new params are new files, the shared run stays as it was)."""
        workdir = clone_run(finished_run, tmp_path / "run")
        shutil.copy(ROOT / "dvc.yaml", workdir / "dvc.yaml")
        subprocess.run([*GIT, "init", "-q"], cwd=workdir, check=True)
        dvc(workdir, "init", "-q")
        subprocess.run([*GIT, "add", "dvc.yaml", "params.yaml", "reports", ".dvc"], cwd=workdir, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", "both patterns"], cwd=workdir, check=True)

        params = yaml.safe_load((workdir / "params.yaml").read_text())
        params["grids"]["mini"]["patterns"] = [{"structure": "unstructured", "sparsity": 0.5}]
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        plan = snakemake(workdir, "--cores", "2", "--dry-run", "all").stdout
        rerun = set(re.findall(r"^rule (\w+):", plan, re.M)) - {"all"}
        assert rerun and rerun <= {"aggregate", "plot_accuracy_change", "experiment_report", "prune_cost",
                                   "nsa_report", "perplexity_report", "summary", "claims", "power"}
        snakemake(workdir, "--cores", "2", "all")

        assert "grids.mini.patterns" in json.loads(dvc(workdir, "params", "diff", "--json"))["params.yaml"]
        metrics = json.loads(dvc(workdir, "metrics", "diff", "--json"))["reports/metrics.json"]
        removed = [key for key, change in metrics.items() if "2of4-0.5" in key]
        assert removed and all(metrics[key]["new"] is None and metrics[key]["old"] is not None for key in removed)
        plots = json.loads(dvc(workdir, "plots", "diff", "--json", "--split"))["data"]
        rows = plots["reports/tables/accuracy.csv"][0]["anchor_definitions"]["<DVC_METRIC_DATA>"]
        patterns = {rev: {row["pattern"] for row in rows if row["rev"] == rev} for rev in ("HEAD", "workspace")}
        assert patterns["HEAD"] - patterns["workspace"] == {"2of4-0.5"} and "unstructured-0.5" in patterns["workspace"]
        revisions = {entry["revisions"][0] for entry in plots["reports/figures/accuracy_change.png"]}
        assert revisions == {"HEAD", "workspace"}
