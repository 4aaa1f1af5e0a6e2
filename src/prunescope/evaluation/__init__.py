"""Evaluation: lm-eval task folders generated from the dataset registry, and zero-shot scoring of in-memory models."""

from prunescope.evaluation.record import evaluate_variant
from prunescope.evaluation.run import environment_info, evaluate_model, evaluate_tasks
from prunescope.evaluation.tasks import build_task

__all__ = ["build_task", "environment_info", "evaluate_model", "evaluate_tasks", "evaluate_variant"]
