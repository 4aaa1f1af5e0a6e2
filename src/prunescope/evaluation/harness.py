"""Score an in-memory model on one generated task folder through lm-eval, and describe the environment."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

logger = logging.getLogger(__name__)

# Zero-shot scoring draws no random numbers; fixing the seeds pins anything lm-eval might draw anyway.
SEED = 1234
METRICS = ("acc", "acc_norm")


def load_task_config(task_dir: str | os.PathLike, task_name: str) -> dict:
    """The task config with its data files made absolute.

    The config on disk names data.jsonl relative to its folder, so a cached or pulled task folder stays
    valid wherever the checkout lives; lm-eval would resolve a relative path against the working
    directory, so it gets the config as a dict with the path resolved here.
    """
    folder = Path(task_dir).resolve()
    config = yaml.safe_load((folder / f"{task_name}.yaml").read_text(encoding="utf-8"))
    if config.get("task") != task_name:
        raise ValueError(f"{folder / f'{task_name}.yaml'} defines task {config.get('task')!r}, not {task_name!r}")
    data_files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str(folder / path) for split, path in data_files.items()}
    return config


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Keep lm-eval's warnings but drop its per-run info chatter from the caller's log."""
    lm_eval_logger = logging.getLogger("lm_eval")
    level = lm_eval_logger.level
    lm_eval_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lm_eval_logger.setLevel(level)


def evaluate_model(model, tokenizer, task_dir: str | os.PathLike, task_name: str, batch_size: int,
                   bootstrap_iters: int, device: str, lm_class: type | None = None) -> dict:
    """evaluate_tasks on one task folder: that task's metrics."""
    return evaluate_tasks(model, tokenizer, {task_name: task_dir}, batch_size, bootstrap_iters, device,
                          lm_class)[task_name]


def evaluate_tasks(model, tokenizer, task_dirs: dict[str, str | os.PathLike], batch_size: int,
                   bootstrap_iters: int, device: str, lm_class: type | None = None) -> dict[str, dict]:
    """Zero-shot log-likelihood accuracy of the in-memory model on task folders, keyed by task name.

    All tasks go through one lm-eval run, so their requests share batches and the task setup is paid once.
    Each task's metrics: acc, acc_norm, their standard errors (None when lm-eval computes none, e.g. with
    bootstrap_iters 0), n, the number of examples scored, and per_example: each example's acc and acc_norm
    (0 or 1) in document order, which the bootstrap confidence intervals of the reports resample, and its choice,
    gold and n_choices (extract_per_example).
    lm_class: the lm-eval model class that scores (default SharedContextLM; lm-eval's HFLM for comparison).
    """
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    from prunescope.evaluation.scoring import SharedContextLM
    from prunescope.models.offload import is_dispatched

    configs = [load_task_config(task_dir, name) for name, task_dir in task_dirs.items()]
    seed_everything(SEED)
    with quiet_lm_eval():
        placed = model if is_dispatched(model) else model.to(device)  # accelerate's hooks place a dispatched one
        lm = (lm_class or SharedContextLM)(pretrained=placed, tokenizer=tokenizer, batch_size=batch_size)
        tasks = TaskManager(include_defaults=False).load(configs)
        results = evaluator.evaluate(lm=lm, task_dict=tasks, bootstrap_iters=bootstrap_iters, log_samples=True)
    by_task = {}
    for name in task_dirs:
        metrics = {**extract_metrics(results, name), "per_example": extract_per_example(results, name)}
        logger.info("%s: acc %.4f, acc_norm %.4f on %d examples", name, metrics["acc"], metrics["acc_norm"],
                    metrics["n"])
        by_task[name] = metrics
    return by_task


def seed_everything(seed: int) -> None:
    """What simple_evaluate seeds; evaluate() is called directly because simple_evaluate also collects
    environment info through subprocesses (about 2 s per job) and asks the model hub for a model SHA."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def extract_metrics(results: dict, task_name: str) -> dict:
    """Plain floats and ints from lm-eval's results, which key metrics by "<metric>,<filter>"."""
    scores = results["results"][task_name]
    metrics = {"n": int(results["n-samples"][task_name]["effective"])}
    for name in METRICS:
        metrics[name] = float(scores[f"{name},none"])
        stderr = scores[f"{name}_stderr,none"]
        metrics[f"{name}_stderr"] = None if stderr == "N/A" else float(stderr)
    return metrics


def extract_per_example(results: dict, task_name: str) -> dict[str, list[int]]:
    """Each example's score per metric (0 or 1), and what it answered, sorted by doc_id, from lm-eval's samples.

    Besides acc and acc_norm: choice, the index of the choice with the highest log-likelihood (acc's prediction,
    ties to the first as lm-eval breaks them), gold, the right choice's index, and n_choices. The reports need them
    to tell a model that answers one label every time, and to measure chance and the majority-label rate of the
    examples actually scored (reporting.floor).
    """
    samples = sorted((s for s in results["samples"][task_name] if s["filter"] == "none"), key=lambda s: s["doc_id"])
    doc_ids = [sample["doc_id"] for sample in samples]
    n = int(results["n-samples"][task_name]["effective"])
    if doc_ids != list(range(n)):
        raise ValueError(f"{task_name}: lm-eval logged samples for doc_ids {doc_ids}, expected 0 .. {n - 1} once each")
    per_example = {name: [int(sample[name]) for sample in samples] for name in METRICS}
    answers = [_answer(sample, task_name) for sample in samples]
    for i, name in enumerate(ANSWER_FIELDS):
        per_example[name] = [answer[i] for answer in answers]
    return per_example


ANSWER_FIELDS = ("choice", "gold", "n_choices")


def _answer(sample: dict, task_name: str) -> tuple[int, int, int]:
    """(argmax choice, gold choice, number of choices) of one logged multiple-choice sample; its filtered_resps hold
    one (log-likelihood, is_greedy) pair per choice."""
    loglikelihoods = [float(response[0]) for response in sample["filtered_resps"]]
    gold = sample["target"]
    if not loglikelihoods or isinstance(gold, list | tuple) or not 0 <= int(gold) < len(loglikelihoods):
        raise ValueError(f"{task_name}, doc {sample['doc_id']}: expected one gold choice index among "
                         f"{len(loglikelihoods)} scored choices, got target {gold!r}")
    return int(np.argmax(loglikelihoods)), int(gold), len(loglikelihoods)


def environment_info(device: str) -> dict:
    """Package versions and the device a result was computed with, embedded in every result JSON."""
    packages = ("torch", "transformers", "lm_eval", "datasets")
    return {
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in packages},
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
    }


def device_name(device: str) -> str:
    """The accelerator's model name (results from different GPUs differ slightly); else the device type."""
    resolved = torch.device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    return resolved.type
