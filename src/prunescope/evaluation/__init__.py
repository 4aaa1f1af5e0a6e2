"""Evaluation: lm-eval task folders generated from the dataset registry, and zero-shot scoring of in-memory models."""

from prunescope.evaluation.harness import environment_info, evaluate_model, evaluate_tasks
from prunescope.evaluation.options import EvaluationOptions, PerplexityOptions, VariantModel
from prunescope.evaluation.tasks import build_task
from prunescope.evaluation.variant import evaluate_variant

__all__ = ["EvaluationOptions", "PerplexityOptions", "VariantModel", "build_task", "environment_info",
           "evaluate_model", "evaluate_tasks", "evaluate_variant"]
