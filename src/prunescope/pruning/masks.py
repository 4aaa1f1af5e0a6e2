"""Exact keep-mask selection shared by every method.

A comparison group of size G at sparsity s loses exactly k = floor(G * s) entries, the k lowest scores, and
ties are broken by pruning the lower index first (a stable ascending sort). The reference implementations
instead prune every score <= the value at sorted position k (k + 1 entries plus any ties), so their layers
land slightly above s and depend on tie order; we prune exactly k, deterministically. Protected entries
(NSA-guided pruning) are never pruned; the same total is then taken from the other entries of the layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
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

    The same mask on every device, by the faster selection there: kthvalue on CPU (several times faster than a
    sort), a stable sort on CUDA, where kthvalue over one huge slice is slow (pytorch issue 75599).
    """
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    return (sorted_lowest_k_mask if scores.is_cuda else kth_lowest_k_mask)(scores, k)


def sorted_lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """lowest_k_mask by definition: the first k of a stable ascending sort go."""
    order = torch.sort(scores, dim=-1, stable=True).indices[..., :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(-1, order, False)


def kth_lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """lowest_k_mask via the k-th value: everything below it goes, and of the entries equal to it, the
    lowest-index ones fill up to k."""
    threshold = torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    keep = scores > threshold
    ties = scores == threshold
    tied_to_prune = k - (scores < threshold).sum(dim=-1, keepdim=True)
    if not torch.equal(ties.sum(dim=-1, keepdim=True), tied_to_prune):
        keep |= ties & (ties.cumsum(dim=-1) > tied_to_prune)
    return keep


def spread_counts(wanted: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Per-group prune counts with protected weights: each group takes min(wanted, free unprotected entries) and
    the shortfall goes evenly to groups with spare unprotected entries (remainder to the lowest index), repeated
    until placed, so the total, and with it the layer's sparsity, stays sum(wanted)."""
    counts = torch.minimum(wanted, free)
    deficit = int((wanted - counts).sum())
    if deficit > int((free - counts).sum()):
        raise ValueError(f"cannot prune {int(wanted.sum())} weights when only {int(free.sum())} are unprotected")
    while deficit:
        spare = free - counts
        open_groups = spare > 0
        n_open = int(open_groups.sum())
        share = deficit // n_open + (open_groups.cumsum(0) <= deficit % n_open)
        add = torch.minimum(share * open_groups, spare)
        counts += add
        deficit -= int(add.sum())
    return counts


def protected_lowest_k(scores: torch.Tensor, k: int, protected: torch.Tensor) -> torch.Tensor:
    """Whole-matrix keep-mask pruning the k lowest unprotected scores (scores finite, k <= unprotected count)."""
    return lowest_k_mask(scores.masked_fill(protected, torch.inf).reshape(-1), k).reshape(scores.shape)


def matrix_mask(scores: torch.Tensor, sparsity: float, protected: torch.Tensor | None = None) -> torch.Tensor:
    """One comparison group over the whole matrix (row-major index order for ties); protected entries are kept."""
    k = prune_count(scores.numel(), sparsity)
    if protected is None:
        return lowest_k_mask(scores.reshape(-1), k).reshape(scores.shape)
    spread_counts(torch.tensor([k]), (~protected).sum().reshape(1).cpu())  # raises when protection leaves too few
    return protected_lowest_k(scores, k, protected)


def row_mask(scores: torch.Tensor, sparsity: float, protected: torch.Tensor | None = None) -> torch.Tensor:
    """One comparison group per output row: each row loses floor(C_in * s); with protection rows * floor(C_in * s)
    in total, a protected row's share moved to the other rows (spread_counts)."""
    k = prune_count(scores.shape[-1], sparsity)
    if protected is None:
        return lowest_k_mask(scores, k)
    counts = spread_counts(torch.full((scores.shape[0],), k), (~protected).sum(dim=1).cpu()).to(scores.device)
    order = torch.sort(scores.masked_fill(protected, torch.inf), dim=1, stable=True).indices
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks >= counts.reshape(-1, 1)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every row, in each group of m consecutive columns, prune the n lowest scores."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M needs the input width to be a multiple of M; {cols} is not a multiple of {m}")
    return lowest_k_mask(scores.reshape(rows, cols // m, m), n).reshape(rows, cols)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A keep-mask as bytes, 8 weights each, first weight in the high bit (numpy.packbits' layout), packed on the
    mask's own device so only 1 bit per weight ever leaves it."""
    bits = mask.reshape(-1).to(torch.uint8)
    bits = torch.nn.functional.pad(bits, (0, -len(bits) % 8)).reshape(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=mask.device)
    return (bits * weights).sum(dim=1, dtype=torch.uint8)


def kept_count(packed: torch.Tensor) -> int:
    """How many weights a packed keep-mask keeps, counted on its bytes (the padding bits are zero)."""
    return int(np.bitwise_count(packed.cpu().numpy()).sum())


def unpack_mask(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The keep-mask of `shape` that pack_mask packed (on packed's device)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:math.prod(shape)].reshape(*shape).bool()


def check_protection(nm: tuple[int, int] | None, protection: object) -> None:
    """Protection (a mask or the driver's neurons; None = off) is unstructured only: a protected N:M group could
    not keep its pattern at equal sparsity."""
    if protection is not None and nm is not None:
        raise ValueError(f"NSA-guided pruning supports unstructured sparsity only, not {nm[0]}:{nm[1]}: a group "
                         "of protected weights could not keep the N:M pattern")


def select_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, per_row: bool,
                protected: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch to N:M, per-row or whole-matrix selection; `protected` (True = never pruned) is unstructured only."""
    check_protection(nm, protected)
    if nm is not None:
        return nm_mask(scores, *nm)
    return row_mask(scores, sparsity, protected) if per_row else matrix_mask(scores, sparsity, protected)
