"""One evaluation job: load a model variant once, score it on each dataset, write one result JSON per dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from prunescope.evaluation.harness import environment_info, evaluate_tasks
from prunescope.evaluation.options import EvaluationOptions, VariantModel
from prunescope.evaluation.tasks import DATA_FILE, task_name
from prunescope.io import sha256_file, write_result
from prunescope.pruning.artifact import pruning_record, read_manifest


def variant_provenance(pruned_dir: str | None, device: torch.device) -> dict:
    """What every result of a model variant embeds besides its scores: the options a pruned variant was pruned with
    (pruning_record; absent for the dense model), so stale results are refused, and the environment."""
    pruning = {"pruning": pruning_record(read_manifest(pruned_dir))} if pruned_dir else {}
    return {**pruning, "environment": environment_info(str(device))}


def evaluate_variant(model: VariantModel, options: EvaluationOptions, *, datasets: Sequence[str],
                     categories: Sequence[str], task_dirs: Sequence[str], out_paths: Sequence[str],
                     device: torch.device, labels: dict) -> None:
    """Score the dense model, or the dense model with a pruning artifact applied, on every given dataset.

    Each result embeds the labels and options.params that made it, and for a pruned variant the options it was
    pruned with (pruning_record), so aggregation can refuse stale results; and
    metrics.per_example, each example's 0/1 acc and acc_norm, which the reports' bootstrap resamples.
    """
    provenance = variant_provenance(model.pruned_dir, device)
    names = [task_name(dataset) for dataset in datasets]
    with model.loaded(device) as (loaded, tokenizer):
        scores = evaluate_tasks(loaded, tokenizer, dict(zip(names, task_dirs, strict=True)), options.batch_size,
                                options.bootstrap_iters, str(device))
    for dataset, name, category, task_dir, out_path in zip(datasets, names, categories, task_dirs, out_paths,
                                                           strict=True):
        write_result(out_path, {
            **labels, "dataset": dataset, "category": category, "metrics": scores[name], "params": options.params,
            **provenance, "inputs": {"task_data_sha256": sha256_file(Path(task_dir) / DATA_FILE)},
        }, inline_int_lists=True)
