"""SparseGPT (Frantar & Alistarh 2023): OBS-style pruning with per-column error propagation.

H = (2 / n_sequences) * sum X X^T in fp32; the scale only matters where dead inputs (H_jj = 1) meet the damping.
The mask is chosen once per block of `blocksize` columns by w^2 / U_jj^2 (U the upper Cholesky factor of H^-1),
or, for N:M, group by group on the already-updated weights with groups counted from each block's start.
On CUDA each layer's column loop is captured once as a CUDA graph and replayed per block (the same kernels, so the
same bits as the eager loop, which bench/sparsegpt_layer.py and the tests compare with a literal reference port).
"""

from __future__ import annotations

import logging

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

logger = logging.getLogger(__name__)

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
    graphed = _graphed_columns(rows, blocksize, nm, W.device) if W.is_cuda and cols >= 2 * blocksize else None
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block, U1 = W[:, start:end], U[start:end, start:end]
        if nm is None:
            scores = block.square() / U1.diagonal().square()
            keep[:, start:end] = (matrix_mask(scores, sparsity) if protected is None else
                                  protected_lowest_k(scores, int(counts[start // blocksize]), protected[:, start:end]))
        errors = torch.empty_like(block)
        if graphed is not None and end - start == blocksize:
            graphed(block, U1, keep[:, start:end], errors)
        else:
            _prune_columns(block, U1, keep[:, start:end], errors, nm)
        W[:, end:] -= errors @ U[start:end, end:]
    return LayerPruning(keep, W.masked_fill_(~keep, 0.0), notes)


def _prune_columns(block: torch.Tensor, U1: torch.Tensor, keep: torch.Tensor, errors: torch.Tensor,
                   nm: tuple[int, int] | None) -> None:
    """The OBS updates inside one column block, in place: column by column, err = (w - q) / U_jj (q = w kept, 0
    pruned) into `errors`, then the rest of the block minus err x U[j, j:]; for N:M each group's mask is chosen here,
    on the updated weights, into `keep`. A kept w is left exactly as it was (its error is 0), a pruned one at
    round-off from 0 (the caller zeroes it): 4 kernels per column where the reference launches 7."""
    d = U1.diagonal()
    for i in range(block.shape[1]):
        if nm is not None and i % nm[1] == 0:
            group = slice(i, i + nm[1])
            keep[:, group] = nm_mask(block[:, group].square() / d[group].square(), *nm)
        torch.div(torch.where(keep[:, i], 0.0, block[:, i]), d[i], out=errors[:, i])
        block[:, i:].sub_(torch.outer(errors[:, i], U1[i, i:]))


def _graphed_columns(rows: int, width: int, nm: tuple[int, int] | None,
                     device: torch.device) -> _GraphedColumns | None:
    """The captured loop, or None (the eager loop, same result) where this GPU or driver cannot capture it."""
    try:
        return _GraphedColumns(rows, width, nm, device)
    except RuntimeError as error:  # torch raises RuntimeError for any CUDA graph capture failure
        logger.warning("SparseGPT: CUDA graph capture failed (%s); the column loop runs eagerly", error)
        return None


class _GraphedColumns:
    """_prune_columns for full blocks on CUDA, captured once per layer as a CUDA graph and replayed per block.

    The loop launches 4 small kernels per column and is bound by their launch cost (about 90 us a column measured
    on an H200); a replay launches the same kernels on static copies of the block, so the result is bit for bit the
    eager loop's.
    """

    def __init__(self, rows: int, width: int, nm: tuple[int, int] | None, device: torch.device):
        self.block = torch.zeros(rows, width, device=device)
        self.U1 = torch.eye(width, device=device)
        self.keep = torch.ones(rows, width, dtype=torch.bool, device=device)
        self.errors = torch.empty(rows, width, device=device)
        side = torch.cuda.Stream(device)  # warm up off the default stream before capturing, as CUDA graphs need
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            _prune_columns(self.block, self.U1, self.keep, self.errors, nm)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            _prune_columns(self.block, self.U1, self.keep, self.errors, nm)

    def __call__(self, block: torch.Tensor, U1: torch.Tensor, keep: torch.Tensor, errors: torch.Tensor) -> None:
        self.block.copy_(block)
        self.U1.copy_(U1)
        self.keep.copy_(keep)
        self.graph.replay()
        block.copy_(self.block)
        keep.copy_(self.keep)
        errors.copy_(self.errors)
