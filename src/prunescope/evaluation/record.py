"""One evaluation job: load the dense model, apply a pruning artifact if any, score, write the result JSON."""

from __future__ import annotations

from pathlib import Path

import torch

from prunescope.io import sha256_file, write_json
from prunescope.models.prepare import load_model


def evaluate_and_record(model_dir: str, dtype: str, pruned_dir: str | None, task_dir: str, batch_size: int,
                        bootstrap_iters: int, device: torch.device, labels: dict, params: dict,
                        out_path: str) -> dict:
    """Score one (model variant, dataset) pair; the result embeds what made it, so aggregation can check it."""
    from prunescope.evaluation import environment_info, evaluate_model
    from prunescope.pruning import apply_artifact

    model, tokenizer = load_model(model_dir, dtype, device)
    if pruned_dir:
        apply_artifact(model, pruned_dir)
    task_name = f"prunescope_{labels['dataset']}"
    metrics = evaluate_model(model, tokenizer, task_dir, task_name, batch_size, bootstrap_iters, str(device))
    result = {
        **labels,
        "metrics": metrics,
        "params": params,
        "environment": environment_info(str(device)),
        "inputs": {"task_data_sha256": sha256_file(Path(task_dir) / "data.jsonl")},
    }
    write_json(out_path, result)
    return result
