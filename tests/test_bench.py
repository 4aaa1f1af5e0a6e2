"""bench/prune.py end to end on a tiny random LLaMA: one row per method and batch size, identical masks."""

import csv
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "prune.py"


def test_bench_reports_every_method_with_identical_masks(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_prune", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--random-config", "llama-tiny", "--nsamples", "4", "--seqlen", "16", "--batch-size", "2",
                "--device", "cpu", "--out", str(tmp_path)])
    with (tmp_path / "prune.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["method"], row["batch_size"]) for row in rows] == [
        (method, size) for method in bench.METHODS for size in ("2", "1")]
    assert all(row["masks_identical"] == "True" and float(row["seconds"]) > 0 for row in rows)
    assert all(row["model"] == "random llama-tiny" and row["nsamples"] == "4" for row in rows)
    table = (tmp_path / "prune.md").read_text()
    assert all(f"| {method} |" in table for method in bench.METHODS)
