"""Wanda (Sun et al. 2023): |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

import torch

from prunescope.pruning.masks import LayerPruning, select_mask
from prunescope.pruning.stats import InputStats

CALIBRATED = True


def wanda_scores(weight: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    """Weight magnitude scaled by the L2 norm of its input feature over all calibration tokens (fp32)."""
    return weight.abs().float() * col_norms.float().reshape(1, -1)


def wanda_mask(weight: torch.Tensor, col_norms: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None) -> torch.Tensor:
    """Per-row groups, as the reference: each output row loses floor(C_in * s) weights."""
    return select_mask(wanda_scores(weight, col_norms), sparsity, nm, per_row=True)


def prune_layer(weight: torch.Tensor, stats: InputStats, sparsity: float, nm: tuple[int, int] | None) -> LayerPruning:
    return LayerPruning(wanda_mask(weight, stats.col_norms, sparsity, nm))
