"""RIA (Zhang et al. 2024): relative importance times input norm to the power alpha.

The reference mixes in the weight's half precision; this is the exact fp32 version (docs/methods.md).
"""

from __future__ import annotations

import torch

from prunescope.pruning.masks import LayerPruning, select_mask
from prunescope.pruning.stats import InputStats

CALIBRATED = True
GRAM = False  # column norms suffice: no C_in^2 statistic
UPDATES_WEIGHTS = False  # kept weights stay as they are: the mask is the whole artifact


def ria_scores(weight: torch.Tensor, col_norms: torch.Tensor, alpha: float) -> torch.Tensor:
    """(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||_2 ** alpha; an all-zero row or column scores 0."""
    magnitude = weight.abs().float()
    tiny = torch.finfo(torch.float32).tiny
    relative = (magnitude / magnitude.sum(dim=0, keepdim=True).clamp_min(tiny)
                + magnitude / magnitude.sum(dim=1, keepdim=True).clamp_min(tiny))
    return relative * col_norms.float().reshape(1, -1).pow(alpha)


def ria_mask(weight: torch.Tensor, col_norms: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
             alpha: float, per_row: bool, protected: torch.Tensor | None = None) -> torch.Tensor:
    """Whole-matrix comparison unless per_row; N:M groups within rows either way."""
    return select_mask(ria_scores(weight, col_norms, alpha), sparsity, nm, per_row=per_row, protected=protected)


def prune_layer(weight: torch.Tensor, stats: InputStats, sparsity: float, nm: tuple[int, int] | None,
                alpha: float = 0.5, per_row: bool = False, *, protected: torch.Tensor | None = None) -> LayerPruning:
    """Defaults as the reference: alpha 0.5, one comparison group per matrix."""
    return LayerPruning(ria_mask(weight, stats.col_norms, sparsity, nm, alpha, per_row, protected))
