"""The benchmarks run and report what they claim, on tiny models (their figures come from `make bench`, not tests)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_model

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_prune_bench_covers_every_method_and_pattern(tmp_path):
    bench_module("prune").main(["--random-config", "llama-tiny", "--nsamples", "4", "--seqlen", "16",
                                "--out", str(tmp_path)])
    rows = read_csv(tmp_path / "prune.csv")
    batched = [row for row in rows if row["artifact_bytes"]]
    assert {(row["method"], row["structure"]) for row in batched} == {
        (method, structure) for method in ("magnitude", "wanda", "sparsegpt", "ria")
        for structure in ("unstructured", "2:4", "4:8")}
    per_sample = [row for row in rows if not row["artifact_bytes"]]
    assert {row["method"] for row in per_sample} == {"wanda", "sparsegpt", "ria"}  # magnitude reads no data
    assert all(row["masks_identical"] == "True" and row["batch_size"] == "1" for row in per_sample)
    # masks cost one bit per pruned weight; SparseGPT also stores its kept values
    mask_only = {row["method"]: float(row["ratio_to_fp16"]) for row in batched if row["structure"] == "2:4"}
    assert mask_only["magnitude"] < 1 / 8 and mask_only["sparsegpt"] > 1 / 4
    assert "| sparsegpt | 4:8 |" in (tmp_path / "prune.md").read_text()


def test_storage_bench_counts_parameters_and_artifact_bytes(tiny_llama, tmp_path):
    from prunescope.pruning import PruneOptions, model_weights, prune_model, save_artifact

    tiny_llama.save_pretrained(tmp_path / "models" / "tiny")
    result = prune_model(tiny_llama, "llama", PruneOptions("magnitude", 0.5), None, "cpu")
    variant = tmp_path / "pruned" / "tiny" / "magnitude" / "unstructured-0.5" / "none"
    save_artifact(result, model_weights(tiny_llama), variant, {})
    storage = bench_module("storage")
    assert storage.parameter_count(tmp_path / "models" / "tiny") == sum(p.numel() for p in tiny_llama.parameters())
    (row,) = storage.storage_rows(tmp_path / "pruned", tmp_path / "models")
    pruned_weights = sum(math.prod(layer["shape"]) for layer in result.layers)
    assert row["masks_bytes"] >= pruned_weights / 8 and row["variant"] == "tiny/magnitude/unstructured-0.5/none"
    assert row["total_bytes"] == row["masks_bytes"] + row["manifest_bytes"] and row["weights_bytes"] == 0
    manifest = tmp_path / "pruned" / "tiny" / "magnitude" / "unstructured-0.5" / "none" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"sparsity": 0.5', '"sparsity": 0.7'))
    with pytest.raises(ValueError, match="manifest.json"):  # an edited manifest is not counted as a variant
        storage.storage_rows(tmp_path / "pruned", tmp_path / "models")


def test_workflow_bench_sums_benchmark_files_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for path, seconds, rss in (("prune/m/a.tsv", 10.0, 900.0), ("prune/m/b.tsv", 30.0, 1100.0),
                               ("evaluate/m/dense.tsv", 5.5, 1500.0)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(header + f"{seconds}\t0:00:10\t{rss}\t1\t1\t1\t1\t1\t1\t1\n")
    old = tmp_path / "prune/m/a.tsv"
    os.utime(old, (1_000, 1_000))
    workflow = bench_module("workflow")
    assert workflow.stage_costs(tmp_path, 0.0) == [
        {"stage": "prune", "model": "-", "jobs": 2, "seconds_total": 40.0, "seconds_mean": 20.0, "seconds_max": 30.0,
         "cpu_seconds_total": 2.0, "max_rss_mib": 1100},
        {"stage": "evaluate", "model": "-", "jobs": 1, "seconds_total": 5.5, "seconds_mean": 5.5, "seconds_max": 5.5,
         "cpu_seconds_total": 1.0, "max_rss_mib": 1500}]
    assert [row["jobs"] for row in workflow.stage_costs(tmp_path, 2_000.0)] == [1, 1]  # only this run's jobs
    (tmp_path / "prune/n/c.tsv").parent.mkdir()
    (tmp_path / "prune/n/c.tsv").write_text(header + "2.0\t0:00:02\t10.0\t1\t1\t1\t1\t1\t1\t1.5\n")
    (tmp_path / "build_task").mkdir()
    (tmp_path / "build_task/movie_reviews.tsv").write_text(header + "1.0\t0:00:01\t10.0\t1\t1\t1\t1\t1\t1\t0.5\n")
    by_model = {(row["stage"], row["model"]): (row["jobs"], row["cpu_seconds_total"])
                for row in workflow.stage_costs(tmp_path, 0.0, by_model=True)}
    assert by_model == {("prune", "m"): (2, 2.0), ("prune", "n"): (1, 1.5), ("evaluate", "m"): (1, 1.0),
                        ("build_task", "-"): (1, 0.5)}  # a rule without a model folder


def test_evaluate_bench_gives_the_same_scores_as_stock_lm_eval(tiny_tokenizer, tmp_path):
    from prunescope.data.prepare import write_manifest
    from prunescope.evaluation import build_task
    from prunescope.io import write_jsonl

    records = [{"id": str(i), "input": f"sentence number {i} is here", "choices": ["yes", "no at all", "maybe so"],
                "label": i % 3} for i in range(12)]
    write_jsonl(tmp_path / "demo.jsonl", records)
    write_manifest(tmp_path / "demo.jsonl", {"dataset": "demo", "part": "evaluation"})
    build_task("demo", tmp_path / "demo.jsonl", "Q: {input}\nA:", None, 0, tmp_path / "tasks" / "demo")
    model = make_tiny_model("llama", len(tiny_tokenizer))
    (row,) = bench_module("evaluate").per_dataset(model, tiny_tokenizer, tmp_path / "tasks", ["demo"], 4,
                                                  torch.device("cpu"), "tiny")
    assert row["same_scores"] and row["examples"] == 12 and row["requests"] == 36 and row["contexts"] == 12
    assert row["tokens_needed"] < row["tokens_stock"]  # stock encodes each context once per multi-token choice


def test_nsa_bench_compares_packed_and_resumed_scoring_with_their_baselines(tiny_tokenizer):
    from prunescope.models.families import get_family
    from prunescope.nsa.prompts import Example, tokenize_words

    encode = lambda text: tiny_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    choices = [encode(c) for c in (" terrible", " wonderful and great")]
    examples = [Example(tokenize_words(tiny_tokenizer, text), choices, label, "correct")
                for text, label in (("the film was", 0), ("is the sky blue on a clear day", 1), ("she went", 1))]
    nsa = bench_module("nsa")
    rows = nsa.compare(make_tiny_model("llama", len(tiny_tokenizer)), get_family("llama"), examples,
                       [{1: [3, 4]}, {0: [5], 1: [6]}, {1: [7, 8]}])
    assert [(row["measure"], row["settings"]) for row in rows] == [("occlusion", 1), ("scoring", 1),
                                                                   ("causal settings", 3)]
    assert all(row["max_margin_diff"] < 1e-4 and row["speedup"] > 0 for row in rows)
    from prunescope.nsa.options import MediationOptions

    single = [Example(example.prompt, [[5], [17]], example.label, "correct") for example in examples]
    vocabulary = sorted({word for example in single for word in example.prompt.words})
    for choices in (single, examples):  # single- and multi-token choices
        mediated = nsa.mediated(make_tiny_model("llama", len(tiny_tokenizer)), get_family("llama"), choices,
                                vocabulary, [0, 1], MediationOptions(0.1, 0.0, 3, 2))
        assert [row["measure"] for row in mediated] == ["mediated matching",
                                                         "mediated, resumed at the lowest patched layer",
                                                         "mediated, forwards grouped by cost"]
        assert all(row["settings"] > 0 and row["max_margin_diff"] < 1e-4 for row in mediated)


def test_gpu_bench_runs_every_stage_on_the_cpu_and_checks_its_answers(tmp_path):
    """bench/gpu.py end to end at tiny sizes (its 7B-width figures come from bench/gpu_check.sh on a GPU)."""
    gpu = bench_module("gpu")
    gpu.main(["--device", "cpu", "--config", "llama-tiny", "--blocks", "1", "--nsamples", "2", "--seqlen", "16",
              "--requests", "8", "--out", str(tmp_path)])
    rows = {row["stage"]: row for row in read_csv(tmp_path / "gpu.csv")}
    assert list(rows) == ["build_model", "dense_forward_x2", "write_checkpoint", "wanda_prune", "wanda_save",
                          "wanda_apply", "sparsegpt_prune", "sparsegpt_save", "sparsegpt_apply", "score_packed",
                          "score_lm_eval"]
    assert all(float(row["seconds"]) > 0 and int(row["peak_rss_bytes"]) > 0 for row in rows.values())
    assert rows["sparsegpt_apply"]["note"] == rows["wanda_apply"]["note"] == "applied model has the pruned weights"
    assert float(rows["wanda_prune"]["full_model_seconds"]) == pytest.approx(2 * float(rows["wanda_prune"]["seconds"]),
                                                                             abs=0.01)  # llama-tiny has 2 blocks
    assert rows["score_packed"]["full_model_seconds"] == ""
    assert "8 requests, attention sdpa; vs packed: largest log-prob difference" in rows["score_lm_eval"]["note"]
    assert ", 0 is-greedy flips" in rows["score_lm_eval"]["note"]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["aims"]["wanda_vs_dense_x2"]["target"] == 3.0 and report["environment"]["cuda"] == "none"
    assert "Full-model seconds are EXTRAPOLATED: measured x 2/1" in (tmp_path / "gpu.md").read_text()
    stages = gpu.Stages(torch.device("cpu"), 1, 2)  # a run cut short after its first stages: aims not measured
    with stages.stage("dense_forward_x2"):
        pass
    assert [aim["measured"] for aim in gpu.aims(stages, 2)] == [None, None, None]


def test_sparsegpt_layer_bench_compares_both_grams_and_both_loops(tmp_path):
    """bench/sparsegpt_layer.py at tiny sizes on the CPU (its 7B-shape figures come from bench/gpu_check.sh)."""
    bench_module("sparsegpt_layer").main(["--device", "cpu", "--shapes", "16x64", "--nsamples", "3", "--seqlen", "8",
                                          "--dtype", "float32", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "sparsegpt_layer.json").read_text())["rows"]
    assert [(row["shape"], row["structure"]) for row in rows] == [("16x64", "unstructured"), ("16x64", "2:4")]
    assert all(row["masks_equal"] and row["weights_equal"] and row["gram_max_relative_difference"] == 0
               for row in rows)
    assert "| 16x64 | 2:4 |" in (tmp_path / "sparsegpt_layer.md").read_text()


def test_llmcompressor_side_by_side_measures_ours_and_compares_perplexity_and_masks(tiny_llama, tiny_tokenizer,
                                                                                     tmp_path):
    """bench/llmcompressor_side_by_side.py without llm-compressor (`make bench-llmcompressor` makes its venv): our
    pruning as its fresh process runs it, then the comparison against a planted peer: our pruned weights with k
    pruned entries of one layer revived and k kept ones pruned, so the masks disagree on exactly 2k of n entries at
    the same sparsity."""
    from prunescope.calibration.sample import save_calibration

    bench = bench_module("llmcompressor_side_by_side")
    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    for name, count in (("calibration", 4), ("windows", 2)):
        save_calibration(torch.randint(0, len(tiny_tokenizer), (count, 16), generator=generator),
                         tmp_path / f"{name}.safetensors", {"source": "test"})
    ours = bench.prune_ours(model_dir, tmp_path / "calibration.safetensors", "wanda", tmp_path / "ours", 0.5, 1, 2)
    assert ours["layers"] == 14 and ours["seconds"] > 0 and ours["peak_rss_bytes"] > 0
    weights, k = load_file(tmp_path / "ours" / "weights.safetensors"), 40
    layer = sorted(weights)[0]
    flat = weights[layer].flatten().clone()
    revived, pruned = (flat == 0).nonzero().flatten()[:k], (flat != 0).nonzero().flatten()[:k]
    flat[revived], flat[pruned] = 1.0, 0.0
    peer = {**weights, layer: flat.view_as(weights[layer])}
    (tmp_path / "peer").mkdir()
    save_file(peer, tmp_path / "peer" / "weights.safetensors")
    n = sum(tensor.numel() for tensor in weights.values())
    args = bench.argparse.Namespace(model_dir=model_dir, calibration=tmp_path / "calibration.safetensors",
                                    windows=tmp_path / "windows.safetensors", methods=["wanda"], sparsity=0.5,
                                    threads=1, ppl_batch_size=2)
    runs = {("wanda", "prunescope"): ours, ("wanda", "peer"): {**ours, "versions": {"llmcompressor": "0.14"}}}
    rows = bench.compare(args, runs, {("wanda", impl): tmp_path / folder
                                      for impl, folder in (("prunescope", "ours"), ("peer", "peer"))})
    assert [row["implementation"] for row in rows] == ["prunescope", "llm-compressor"]
    assert len(revived) == len(pruned) == k and rows[0]["speedup"] == 1.0
    assert rows[0]["mask_agreement"] == rows[1]["mask_agreement"] == round(1 - 2 * k / n, 4) < 1
    assert rows[0]["sparsity"] == rows[1]["sparsity"] == 0.5
    assert len({rows[0]["perplexity"], rows[1]["perplexity"], rows[0]["dense_perplexity"]}) == 3
    assert "llm-compressor 0.14 from its own venv." in bench.report(rows, args)
