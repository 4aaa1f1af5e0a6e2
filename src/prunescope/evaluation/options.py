"""The evaluation jobs' typed options, built once from the validated params (params.yaml's `evaluation` and
`perplexity` blocks, the rule's inputs and offload settings) and passed whole to evaluate_variant and
perplexity_variant: which model variant to load, and how each evaluation runs."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from prunescope.config import evaluation_params, perplexity_params
from prunescope.models.offload import loaded_model


@dataclass(frozen=True)
class VariantModel:
    """The model a job loads: the prepared dense model in its dtype (params.yaml's models entry), with the pruning
    artifact at pruned_dir applied for a pruned variant (None: the dense model), and params.yaml's offload settings
    for a model larger than the device (models.offload; None: loaded whole)."""

    model_dir: str
    dtype: str
    pruned_dir: str | None = None
    offload: Mapping[str, Any] | None = None

    def loaded(self, device: torch.device) -> AbstractContextManager:
        """loaded_model's (model, tokenizer) context, the model ready to run on `device`."""
        return loaded_model(self.model_dir, self.dtype, device, self.offload, self.pruned_dir)


@dataclass(frozen=True)
class EvaluationOptions:
    """Zero-shot scoring: batch_size requests a forward and bootstrap_iters (0: no stderrs); params is what every
    result embeds (config.evaluation_params, the evaluation block and the grid's example limit, which was applied
    when the task was built), so that aggregation refuses results made under other params."""

    batch_size: int
    bootstrap_iters: int
    params: Mapping[str, Any]

    @classmethod
    def from_params(cls, evaluation: Mapping[str, Any], limit: int | None) -> EvaluationOptions:
        """From params.yaml's `evaluation` block and the grid's eval limit (None: every example)."""
        return cls(evaluation["batch_size"], evaluation["bootstrap_iters"], evaluation_params(evaluation, limit))


@dataclass(frozen=True)
class PerplexityOptions:
    """Perplexity: batch_size windows a forward; params is what every result embeds (config.perplexity_params)."""

    batch_size: int
    params: Mapping[str, Any]

    @classmethod
    def from_params(cls, perplexity: Mapping[str, Any]) -> PerplexityOptions:
        """From params.yaml's `perplexity` block."""
        return cls(perplexity["batch_size"], perplexity_params(perplexity))
