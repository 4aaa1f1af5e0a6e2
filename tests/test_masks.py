"""Exact-count mask selection: k = floor(G * s) per group, ties pruned lower index first, N:M patterns."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunescope.pruning.masks import (
    kth_lowest_k_mask,
    lowest_k_mask,
    matrix_mask,
    nm_mask,
    pack_mask,
    parse_structure,
    row_mask,
    select_mask,
    sorted_lowest_k_mask,
    spread_counts,
    unpack_mask,
)


def stable_sort_reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.scatter_(-1, torch.sort(scores, dim=-1, stable=True).indices[..., :k], False)
    return keep


@pytest.mark.parametrize("select", [lowest_k_mask, kth_lowest_k_mask, sorted_lowest_k_mask])
def test_lowest_k_equals_stable_sort_on_heavily_tied_scores(select):
    """The CPU (kthvalue) and CUDA (sort) selections are the same masks: lowest_k_mask picks one by device."""
    generator = torch.Generator().manual_seed(0)
    for shape in [(7, 12), (3, 4), (50,), (5, 6, 4)]:
        scores = torch.randint(0, 4, shape, generator=generator).float()
        for k in range(1, shape[-1] + 1):
            assert torch.equal(select(scores, k), stable_sort_reference(scores, k))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_packed_masks_are_numpy_packbits_and_unpack_back(rows, cols, seed):
    mask = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1)))
    assert torch.equal(unpack_mask(packed, (rows, cols)), mask)


def test_ties_prune_the_lower_index_first():
    assert lowest_k_mask(torch.ones(6), 2).tolist() == [False, False, True, True, True, True]
    assert lowest_k_mask(torch.tensor([3.0, 1.0, 2.0, 1.0, 1.0]), 2).tolist() == [True, False, True, False, True]


@pytest.mark.parametrize("sparsity", [0.1, 0.25, 0.5, 0.6, 0.9])
def test_exact_count_per_comparison_group(sparsity):
    scores = torch.randn(13, 37, generator=torch.Generator().manual_seed(1))
    assert (~matrix_mask(scores, sparsity)).sum() == math.floor(13 * 37 * sparsity)
    assert ((~row_mask(scores, sparsity)).sum(dim=1) == math.floor(37 * sparsity)).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_pattern_holds_in_every_group(n, m):
    scores = torch.randint(0, 3, (9, 4 * m), generator=torch.Generator().manual_seed(2)).float()
    keep = nm_mask(scores, n, m)
    assert ((~keep).reshape(9, 4, m).sum(dim=-1) == n).all()
    assert torch.equal(keep.reshape(9, 4, m), stable_sort_reference(scores.reshape(9, 4, m), n))


def test_nm_ties_prune_lower_columns():
    assert nm_mask(torch.zeros(1, 8), 2, 4).tolist() == [[False, False, True, True] * 2]


def test_nm_needs_width_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(torch.zeros(2, 6), 2, 4)


def test_parse_structure():
    assert parse_structure("unstructured", 0.5) is None
    assert parse_structure("2:4", 0.5) == (2, 4)
    assert parse_structure("4:8", 0.5) == (4, 8)
    with pytest.raises(ValueError, match="sparsity is 0.6"):
        parse_structure("2:4", 0.6)
    for bad in ["2-4", "4:2", "0:4", "a:b", "2:4:8"]:
        with pytest.raises(ValueError, match="N:M"):
            parse_structure(bad, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        parse_structure("unstructured", 1.0)


def test_matrix_protection_by_hand():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    protected = torch.tensor([[True, True, False, False], [False] * 4])
    # four go either way: without protection 1-4, with 1 and 2 protected the next lowest, 3-6
    assert matrix_mask(scores, 0.5, protected).tolist() == [[True, True, False, False], [False, False, True, True]]


def test_row_protection_moves_a_protected_rows_share_by_hand():
    scores = torch.tensor([[0.0, 1, 2, 3], [4, 3, 2, 1], [1, 0, 3, 2], [3, 3, 3, 3]])
    protected = torch.tensor([[True] * 4, [False, True, True, True], [False] * 4, [False] * 4])
    # two per row, eight in all: row 0 takes none, row 1 one (its only free entry); the shortfall of 3 goes
    # evenly to rows 2 and 3, the odd one to row 2; row 3's ties go lower column first
    assert row_mask(scores, 0.5, protected).tolist() == [[True] * 4, [False, True, True, True], [False] * 4,
                                                         [False, False, False, True]]


def test_spread_counts_evenly_capped_and_repeated():
    wanted = torch.full((5,), 2)
    # min(2, free) = [0, 0, 2, 2, 2]; shortfall 4 over 3 open rows: 2, 1, 1, but row 2 has room for one more only;
    # the last 1 goes to the lowest-index open row
    assert spread_counts(wanted, torch.tensor([0, 0, 3, 10, 10])).tolist() == [0, 0, 3, 4, 3]
    with pytest.raises(ValueError, match="cannot prune 10 weights when only 9 are unprotected"):
        spread_counts(wanted, torch.tensor([0, 0, 3, 3, 3]))


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7])
def test_protected_entries_kept_and_the_count_unchanged(sparsity):
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (11, 24), generator=generator).float()
    protected = torch.rand(11, 24, generator=generator) < 0.2
    protected[2] = True  # a fully protected row
    for per_row in (False, True):
        keep = select_mask(scores, sparsity, None, per_row, protected)
        assert not (protected & ~keep).any()
        assert (~keep).sum() == (~select_mask(scores, sparsity, None, per_row)).sum()
        dim = 1 if per_row else None  # the lowest unprotected scores of each group go
        assert (scores.where(~keep, -1.0).amax(dim=dim) <= scores.where(keep & ~protected, 9.0).amin(dim=dim)).all()


@pytest.mark.parametrize("per_row", [False, True])
def test_no_protection_gives_the_unprotected_masks(per_row):
    scores = torch.randint(0, 4, (9, 16), generator=torch.Generator().manual_seed(4)).float()
    for sparsity in (0.0, 0.3, 0.5, 0.9):
        none = torch.zeros_like(scores, dtype=torch.bool)
        assert torch.equal(select_mask(scores, sparsity, None, per_row, none),
                           select_mask(scores, sparsity, None, per_row))


def test_protection_errors():
    scores, protected = torch.ones(2, 4), torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="unstructured sparsity only, not 2:4"):
        select_mask(scores, 0.5, (2, 4), False, protected)
    protected[0, 0] = False
    for per_row in (False, True):
        with pytest.raises(ValueError, match="cannot prune 4 weights when only 1 are unprotected"):
            select_mask(scores, 0.5, None, per_row, protected)
