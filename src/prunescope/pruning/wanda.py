"""Wanda (Sun et al. 2023): |W_ij| * ||X_j||_2, compared within each output row.

Optional variant (the reference's use_variant): one alpha for the whole layer; each row drops its lowest scores
while their running sum stays within alpha * the row's total, so rows whose score mass sits in a few weights lose
more. The reference bisects alpha until the layer is within 0.001 of s. The pruned set at alpha is exactly the
entries whose ratio (running sum up to and including the entry, in ascending order) / row total is <= alpha, so
we solve the search exactly: prune the floor(G * s) lowest ratios over the matrix (within 1/G of s; the count rule
of every other method), ties to the lower row first; equal scores within a row go lower column index first.
"""

from __future__ import annotations

import torch

from prunescope.pruning.masks import LayerPruning, matrix_mask, select_mask
from prunescope.pruning.stats import InputStats

CALIBRATED = True
GRAM = False  # column norms suffice: no C_in^2 statistic
UPDATES_WEIGHTS = False  # kept weights stay as they are: the mask is the whole artifact


def wanda_scores(weight: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    """Weight magnitude scaled by the L2 norm of its input feature over all calibration tokens (fp32)."""
    return weight.abs().float() * col_norms.float().reshape(1, -1)


def wanda_mask(weight: torch.Tensor, col_norms: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None, protected: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row groups, as the reference: each output row loses floor(C_in * s) weights."""
    return select_mask(wanda_scores(weight, col_norms), sparsity, nm, per_row=True, protected=protected)


def alpha_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask of the per-row alpha variant: the floor(G * s) lowest cumulative-share ratios go."""
    ordered, order = torch.sort(scores, dim=1, stable=True)
    totals = ordered.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)  # a zero row has ratios 0
    ratios = ordered.cumsum(dim=1) / totals  # non-decreasing along each row, so every row prunes a prefix
    return torch.empty_like(scores, dtype=torch.bool).scatter_(1, order, matrix_mask(ratios, sparsity))


def prune_layer(weight: torch.Tensor, stats: InputStats, sparsity: float, nm: tuple[int, int] | None,
                per_row_alpha: bool = False, *, protected: torch.Tensor | None = None) -> LayerPruning:
    """Per-row comparison as the reference; per_row_alpha selects the reference's alpha variant (unstructured)."""
    if not per_row_alpha:
        return LayerPruning(wanda_mask(weight, stats.col_norms, sparsity, nm, protected))
    if protected is not None:
        raise ValueError("wanda's per_row_alpha does not support protected weights (NSA-guided pruning); "
                         "set pruning.wanda.per_row_alpha: false")
    if nm is not None:
        raise ValueError(f"wanda's per_row_alpha is for unstructured sparsity only, not {nm[0]}:{nm[1]}; "
                         "set pruning.wanda.per_row_alpha: false for N:M")
    return LayerPruning(alpha_mask(wanda_scores(weight, stats.col_norms), sparsity))
