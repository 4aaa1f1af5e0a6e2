"""Exact keep-mask selection shared by every method.

A comparison group of size G at sparsity s loses exactly k = floor(G * s) entries, the k lowest scores, and
ties are broken by pruning the lower index first (a stable ascending sort). The reference implementations
instead prune every score <= the value at sorted position k (k + 1 entries plus any ties), so their layers
land slightly above s and depend on tie order; we prune exactly k, deterministically.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class LayerPruning(NamedTuple):
    """One layer's outcome: keep-mask, the updated fp32 weight (weight-updating methods only), notes to record."""

    mask: torch.Tensor
    weight: torch.Tensor | None = None
    notes: tuple[str, ...] = ()


def parse_structure(structure: str, sparsity: float) -> tuple[int, int] | None:
    """Return (N, M) for an "N:M" structure, None for "unstructured"; N:M is only valid at s = N/M."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if structure == "unstructured":
        return None
    parts = structure.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 < int(parts[0]) < int(parts[1]):
        raise ValueError(f"structure must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'), got {structure!r}")
    n, m = int(parts[0]), int(parts[1])
    if not math.isclose(sparsity, n / m, rel_tol=0.0, abs_tol=1e-9):
        raise ValueError(f"structure {structure} prunes exactly {n}/{m} = {n / m} of the weights, "
                         f"but sparsity is {sparsity}")
    return n, m


def prune_count(group_size: int, sparsity: float) -> int:
    """k = floor(G * s), the number of entries a group of G loses (the references' int(G * s))."""
    return math.floor(group_size * sparsity)


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over the last dimension pruning exactly the k lowest scores per row, lower index first on ties.

    Same result as pruning the first k of a stable ascending sort, but via the k-th value (several times faster
    on CPU): everything below it goes, and of the entries equal to it, the lowest-index ones fill up to k.
    """
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    keep = scores > threshold
    ties = scores == threshold
    tied_to_prune = k - (scores < threshold).sum(dim=-1, keepdim=True)
    if not torch.equal(ties.sum(dim=-1, keepdim=True), tied_to_prune):
        keep |= ties & (ties.cumsum(dim=-1) > tied_to_prune)
    return keep


def matrix_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """One comparison group over the whole matrix (row-major index order for ties)."""
    return lowest_k_mask(scores.reshape(-1), prune_count(scores.numel(), sparsity)).reshape(scores.shape)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """One comparison group per output row: each row loses floor(C_in * s)."""
    return lowest_k_mask(scores, prune_count(scores.shape[-1], sparsity))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every row, in each group of m consecutive columns, prune the n lowest scores."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M needs the input width to be a multiple of M; {cols} is not a multiple of {m}")
    return lowest_k_mask(scores.reshape(rows, cols // m, m), n).reshape(rows, cols)


def select_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, per_row: bool) -> torch.Tensor:
    """Dispatch to N:M, per-row or whole-matrix selection."""
    if nm is not None:
        return nm_mask(scores, *nm)
    return row_mask(scores, sparsity) if per_row else matrix_mask(scores, sparsity)
