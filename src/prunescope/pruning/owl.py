"""OWL (Yin et al., ICML 2024): outlier-weighted layerwise sparsity, a modifier of every method.

Blocks whose Wanda scores hold more outliers lose fewer weights. Per block, the outlier ratio D_l is the share of
the Wanda scores |W_ij| ||X_j|| of all its Linears (concatenated, as the reference does) above M times their mean,
on the dense model's calibration activations. D_l is mapped linearly onto [s - lambda, s + lambda] (highest D,
lowest sparsity), then shifted so that the mean over blocks weighted by their prunable parameters is exactly s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

# why a run with OWL must prune unstructured, with calibration data (PruneOptions and prune_model check each part)
REQUIREMENTS = ("OWL layer sparsity needs unstructured sparsity (N:M fixes every group's count) and calibration data "
                "(its outlier ratios are Wanda scores)")


class OwlOptions(NamedTuple):
    """M (outlier threshold, in multiples of the block's mean score) and lambda (the half-width of the range)."""

    m: float = 5.0
    lam: float = 0.08


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """Share of the scores of one block's Linears above m times their common mean."""
    flat = torch.cat([score.reshape(-1).float() for score in scores])
    return float((flat > m * flat.mean()).float().mean())


def block_sparsities(ratios: Sequence[float], sizes: Sequence[int], sparsity: float, lam: float) -> list[float]:
    """Each block's sparsity from its outlier ratio; the size-weighted mean is `sparsity` (uniform if all D agree)."""
    ratio = torch.tensor(ratios, dtype=torch.float64)
    weight = torch.tensor(sizes, dtype=torch.float64)
    spread = ratio.max() - ratio.min()
    if spread == 0:
        return [sparsity] * len(ratios)
    spread_out = sparsity + lam - 2 * lam * (ratio - ratio.min()) / spread
    shifted = spread_out + (sparsity - (spread_out * weight).sum() / weight.sum())
    if not (shifted.min() >= 0 and shifted.max() < 1):
        raise ValueError(f"OWL block sparsities {shifted.tolist()} leave [0, 1) at sparsity {sparsity} with lambda "
                         f"{lam}: lower pruning.owl.lambda")
    return shifted.tolist()
