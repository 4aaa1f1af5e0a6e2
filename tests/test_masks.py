"""Exact-count mask selection: k = floor(G * s) per group, ties pruned lower index first, N:M patterns."""

import math

import pytest
import torch

from prunescope.pruning.masks import lowest_k_mask, matrix_mask, nm_mask, parse_structure, row_mask


def stable_sort_reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.scatter_(-1, torch.sort(scores, dim=-1, stable=True).indices[..., :k], False)
    return keep


def test_lowest_k_equals_stable_sort_on_heavily_tied_scores():
    generator = torch.Generator().manual_seed(0)
    for shape in [(7, 12), (3, 4), (50,), (5, 6, 4)]:
        scores = torch.randint(0, 4, shape, generator=generator).float()
        for k in range(shape[-1] + 1):
            assert torch.equal(lowest_k_mask(scores, k), stable_sort_reference(scores, k))


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
