"""Magnitude pruning: the data-free baseline, |W| compared over the whole matrix."""

from __future__ import annotations

import torch

from prunescope.pruning.masks import LayerPruning, select_mask
from prunescope.pruning.stats import InputStats

CALIBRATED = False
GRAM = False  # uses no statistic (calibration, if given, only feeds the error estimate)
UPDATES_WEIGHTS = False  # kept weights stay as they are: the mask is the whole artifact


def magnitude_mask(weight: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
                   protected: torch.Tensor | None = None) -> torch.Tensor:
    """Keep-mask from |W|: one group per matrix (unstructured) or per N:M column group."""
    return select_mask(weight.abs().float(), sparsity, nm, per_row=False, protected=protected)


def prune_layer(weight: torch.Tensor, stats: InputStats | None, sparsity: float, nm: tuple[int, int] | None, *,
                protected: torch.Tensor | None = None) -> LayerPruning:
    return LayerPruning(magnitude_mask(weight, sparsity, nm, protected))
