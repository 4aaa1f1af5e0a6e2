"""SparseGPT (Frantar & Alistarh 2023): OBS-style pruning with per-column error propagation.

H = (2 / n_sequences) * sum X X^T in fp32; the scale only matters where dead inputs (H_jj = 1) meet the damping.
The mask is chosen once per block of `blocksize` columns by w^2 / U_jj^2 (U the upper Cholesky factor of H^-1),
or, for N:M, group by group on the already-updated weights with groups counted from each block's start.
"""

from __future__ import annotations

import torch

from prunescope.pruning.masks import (
    LayerPruning,
    check_protection,
    matrix_mask,
    nm_mask,
    protected_lowest_k,
    prune_count,
    spread_counts,
)
from prunescope.pruning.stats import InputStats

CALIBRATED = True
GRAM = True  # SparseGPT's Hessian is the Gram sum X X^T
UPDATES_WEIGHTS = True  # kept weights change (OBS updates): the artifact stores them
DAMPING_RETRIES = 3


def inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Upper Cholesky factor of (H + percdamp * mean(diag H) * I)^-1; on failure the damping grows x10."""
    notes = ()
    mean_diag = hessian.diagonal().mean()
    for _ in range(DAMPING_RETRIES + 1):
        damped = hessian.clone()
        damped.diagonal().add_(percdamp * mean_diag)
        lower, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if info == 0:
                return upper, notes
        notes += (f"Cholesky failed at percdamp={percdamp:g}; retried at {percdamp * 10:g}",)
        percdamp *= 10
    raise RuntimeError(f"Cholesky of the damped Hessian failed even at percdamp={percdamp / 10:g}")


def prune_layer(weight: torch.Tensor, stats: InputStats, sparsity: float, nm: tuple[int, int] | None,
                percdamp: float = 0.01, blocksize: int = 128, *,
                protected: torch.Tensor | None = None) -> LayerPruning:
    """Prune one (C_out, C_in) weight; returns the mask and the updated fp32 weight (pruned entries +0).

    Protected weights still absorb the OBS updates but are never zeroed; each block prunes as many as without
    protection unless its protected columns leave too few, then the shortfall moves to other blocks.
    """
    check_protection(nm, protected)
    rows, cols = weight.shape
    if nm is not None and (blocksize % nm[1] or cols % nm[1]):
        raise ValueError(f"SparseGPT {nm[0]}:{nm[1]} needs blocksize ({blocksize}) and C_in ({cols}) "
                         f"to be multiples of {nm[1]}")
    W = weight.detach().float().clone()
    H = stats.gram * (2.0 / stats.n_sequences)
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    U, notes = inverse_cholesky(H, percdamp)
    keep = torch.ones_like(W, dtype=torch.bool)
    if protected is not None:
        wanted = torch.tensor([prune_count(rows * min(blocksize, cols - start), sparsity)
                               for start in range(0, cols, blocksize)])
        counts = spread_counts(wanted, torch.stack([(~p).sum() for p in protected.split(blocksize, dim=1)]).cpu())
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block, U1 = W[:, start:end], U[start:end, start:end]
        d = U1.diagonal()
        if nm is None:
            scores = block.square() / d.square()
            keep[:, start:end] = (matrix_mask(scores, sparsity) if protected is None else
                                  protected_lowest_k(scores, int(counts[start // blocksize]), protected[:, start:end]))
        errors = torch.empty_like(block)
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                group = slice(i, i + nm[1])
                keep[:, start + i:start + i + nm[1]] = nm_mask(block[:, group].square() / d[group].square(), *nm)
            # (w - q) / d with q = w kept, 0 pruned; the update leaves a kept w exactly as it was (its error is 0)
            # and a pruned one at round-off from 0, zeroed at the end: 4 kernels per column, not 7
            torch.div(torch.where(keep[:, start + i], 0.0, block[:, i]), d[i], out=errors[:, i])
            block[:, i:].sub_(torch.outer(errors[:, i], U1[i, i:]))
        W[:, end:] -= errors @ U[start:end, end:]
    return LayerPruning(keep, W.masked_fill_(~keep, 0.0), notes)
