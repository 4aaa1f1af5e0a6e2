"""Each method's scores against hand-computed small cases, SparseGPT against its closed form, error ordering."""

import importlib.util
from pathlib import Path

import pytest
import torch

from prunescope.pruning import magnitude, ria, sparsegpt, wanda
from prunescope.pruning.stats import ERROR_SAMPLE_PER_SEQUENCE, InputStats


def stats_with_norms(norms: list[float]) -> InputStats:
    """One token per feature, so ||X_j||_2 is exactly norms[j]."""
    return InputStats.from_inputs(torch.diag(torch.tensor(norms)))


def test_gram_bits_do_not_depend_on_the_batch_size():
    """The batched driver and a per-sample loop must choose identical masks, so the fp32 sums must match."""
    x = correlated_inputs(8 * 64, 48, seed=13).reshape(8, 64, 48)
    one_at_a_time = InputStats(48, "cpu", gram=True)
    for sequence in x.split(1):
        one_at_a_time.add(sequence)
    batched = InputStats.from_inputs(x)
    assert torch.equal(batched.squares, one_at_a_time.squares)
    assert torch.equal(batched.gram, one_at_a_time.gram) and batched.n_sequences == one_at_a_time.n_sequences == 8


def test_magnitude_whole_matrix_by_hand():
    weight = torch.tensor([[1.0, -4.0, 2.0, 0.5], [3.0, -0.1, -2.0, 5.0]])
    # |W| sorted: 0.1, 0.5, 1, 2 (index 2), 2 (index 6), ...: the tie at the cut prunes index 2, not 6.
    keep = magnitude.prune_layer(weight, None, 0.5, None).mask
    assert keep.tolist() == [[False, True, False, False], [True, False, True, True]]


def test_wanda_per_row_by_hand():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 8.0, -1.0, 4.0]])
    stats = stats_with_norms([4.0, 1.0, 2.0, 0.5])
    # scores: row 0 = [4, 2, 6, 2], row 1 = [4, 8, 2, 2]
    assert wanda.prune_layer(weight, stats, 0.5, None).mask.tolist() == [[True, False, True, False],
                                                                          [True, True, False, False]]
    # one per row: the tied 2s lose their lower index only
    assert wanda.prune_layer(weight, stats, 0.25, None).mask.tolist() == [[True, False, True, True],
                                                                           [True, True, False, True]]


def test_wanda_per_row_alpha_by_hand():
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [10.0, 1.0, 3.0, 2.0]])
    stats = stats_with_norms([1.0, 1.0, 1.0, 1.0])
    # cumulative share in ascending order: row 0 = 1/4, 2/4, 3/4, 1; row 1 (1, 2, 3, 10) = 1/16, 3/16, 6/16, 1.
    # An alpha in [6/16, 2/4) prunes four: three of row 1 (its mass sits in one weight) and one of row 0.
    keep = wanda.prune_layer(weight, stats, 0.5, None, per_row_alpha=True).mask
    assert keep.tolist() == [[False, True, True, True], [True, False, False, False]]
    assert wanda.prune_layer(weight, stats, 0.5, None).mask.tolist() == [[False, False, True, True],
                                                                         [True, False, True, False]]


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.7])
def test_wanda_per_row_alpha_lands_on_s_with_one_alpha(sparsity):
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(48, 96, generator=generator) * torch.logspace(-1, 1, 48).reshape(-1, 1) ** 2
    stats = InputStats.from_inputs(correlated_inputs(256, 96, seed=12))
    keep = wanda.prune_layer(weight, stats, sparsity, None, per_row_alpha=True).mask
    assert abs(float((~keep).float().mean()) - sparsity) <= 0.001
    scores = wanda.wanda_scores(weight, stats.col_norms)
    pruned_sum, totals = (scores * ~keep).sum(dim=1), scores.sum(dim=1)
    assert (scores.where(~keep, 0.0).amax(dim=1) <= scores.where(keep, torch.inf).amin(dim=1)).all()  # prefixes
    # one alpha for all rows: each row's pruned share <= alpha < its share with its next weight added
    assert (pruned_sum / totals).max() <= ((pruned_sum + scores.where(keep, torch.inf).amin(dim=1)) / totals).min()
    assert (~keep).sum(dim=1).unique().numel() > 1  # unlike plain Wanda, rows lose different counts


def test_wanda_per_row_alpha_is_unstructured_only():
    with pytest.raises(ValueError, match="per_row_alpha is for unstructured sparsity only, not 2:4"):
        wanda.prune_layer(torch.randn(2, 8), stats_with_norms([1.0] * 8), 0.5, (2, 4), per_row_alpha=True)


def test_ria_by_hand():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    stats = stats_with_norms([4.0, 1.0])
    # relative importance: |W|/column sums [4, 6] + |W|/row sums [3, 7]; times sqrt(norm) = [2, 1]
    expected = torch.tensor([[(1 / 4 + 1 / 3) * 2, 2 / 6 + 2 / 3], [(3 / 4 + 3 / 7) * 2, 4 / 6 + 4 / 7]])
    torch.testing.assert_close(ria.ria_scores(weight, stats.col_norms, 0.5), expected)
    assert ria.prune_layer(weight, stats, 0.5, None).mask.tolist() == [[False, False], [True, True]]
    assert ria.prune_layer(weight, stats, 0.5, None, per_row=True).mask.tolist() == [[True, False], [True, False]]


def test_scores_are_fp32_for_half_weights():
    weight = torch.randn(4, 8).to(torch.bfloat16)
    norms = torch.rand(8)
    assert wanda.wanda_scores(weight, norms).dtype == torch.float32
    assert ria.ria_scores(weight, norms, 0.5).dtype == torch.float32


@pytest.mark.parametrize("module", [magnitude, wanda, ria, sparsegpt])
def test_every_method_supports_nm(module):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 16, generator=generator)
    stats = InputStats.from_inputs(torch.randn(4, 32, 16, generator=generator))
    options = {"blocksize": 8} if module is sparsegpt else {}
    keep = module.prune_layer(weight, stats, 0.5, (2, 4), **options).mask
    assert ((~keep).reshape(6, 4, 4).sum(dim=-1) == 2).all()


def correlated_inputs(tokens: int, features: int, seed: int) -> torch.Tensor:
    """Inputs with correlated features and column scales spanning two orders of magnitude, like LLM activations."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) / features**0.5 + torch.eye(features)
    scales = torch.logspace(-1, 1, features)[torch.randperm(features, generator=generator)]
    return (torch.randn(tokens, features, generator=generator) @ mixing) * scales


def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude():
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    stats = InputStats.from_inputs(correlated_inputs(512, 64, seed=4).reshape(8, 64, 64))
    errors = {}
    for module in (magnitude, wanda, sparsegpt):
        pruned = module.prune_layer(weight, stats, 0.5, None)
        new = pruned.weight if pruned.weight is not None else weight * pruned.mask
        errors[module] = stats.reconstruction_error(weight, new)
    assert errors[sparsegpt] < errors[wanda] < errors[magnitude]


def test_reconstruction_error_matches_direct_computation():
    x = correlated_inputs(100, 8, seed=5)
    weight = torch.randn(3, 8)
    pruned = weight * (torch.rand(3, 8) > 0.5)
    direct = torch.linalg.norm(x @ weight.T - x @ pruned.T) / torch.linalg.norm(x @ weight.T)
    assert InputStats.from_inputs(x).reconstruction_error(weight, pruned) == pytest.approx(float(direct), rel=1e-4)
    every_token = InputStats.from_inputs(x.reshape(10, 10, 8), gram=False)  # sequences no longer than the sample
    assert every_token.gram is None and sum(len(rows) for rows in every_token.error_sample) == 100
    assert every_token.reconstruction_error(weight, pruned) == pytest.approx(float(direct), rel=1e-4)


def test_gram_free_statistics_give_the_same_norms_and_estimate_the_error():
    """Wanda's and RIA's statistics: no C_in^2 Gram, the same column norms up to fp32 rounding, and an error
    estimated from ERROR_SAMPLE_PER_SEQUENCE of each sequence's tokens, close to the exact one."""
    x = correlated_inputs(64 * 128, 16, seed=11).reshape(64, 128, 16)
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(12))
    pruned = weight * wanda.wanda_mask(weight, InputStats.from_inputs(x).col_norms, 0.5, None)
    exact, sampled = InputStats.from_inputs(x), InputStats.from_inputs(x, gram=False)
    torch.testing.assert_close(sampled.col_norms, exact.gram.diagonal().sqrt())
    assert [len(rows) for rows in sampled.error_sample] == [ERROR_SAMPLE_PER_SEQUENCE] * 64
    assert sampled.reconstruction_error(weight, pruned) == pytest.approx(exact.reconstruction_error(weight, pruned),
                                                                         rel=0.1)
    assert "estimated" in sampled.error_method and "exact" in exact.error_method
    by_halves = InputStats(16, "cpu", gram=False)
    for half in x.split(32):
        by_halves.add(half)
    assert all(torch.equal(a, b) for a, b in zip(by_halves.error_sample, sampled.error_sample, strict=True))


def test_sparsegpt_one_block_equals_least_squares_optimum():
    """Pruned columns first, one block, no damping: the OBS updates give the optimal kept weights exactly."""
    generator = torch.Generator().manual_seed(6)
    x = correlated_inputs(256, 8, seed=7)
    weight = torch.randn(5, 8, generator=generator)
    weight[:, :4] *= 1e-3  # the mask (lowest w^2 / U_jj^2) then prunes exactly columns 0-3
    result = sparsegpt.prune_layer(weight, InputStats.from_inputs(x), 0.5, None, percdamp=0.0, blocksize=128)
    assert result.mask[:, :4].logical_not().all() and result.mask[:, 4:].all()
    x64, kept = x.double(), x.double()[:, 4:]
    optimum = torch.linalg.lstsq(kept, x64 @ weight.double().T).solution.T  # min ||W X - W_K X_K||
    torch.testing.assert_close(result.weight[:, 4:].double(), optimum, rtol=1e-4, atol=1e-6)
    assert (result.weight[:, :4] == 0).all()


def test_sparsegpt_exact_count_per_block():
    generator = torch.Generator().manual_seed(8)
    weight = torch.randn(7, 40, generator=generator)
    stats = InputStats.from_inputs(correlated_inputs(200, 40, seed=9))
    keep = sparsegpt.prune_layer(weight, stats, 0.3, None, blocksize=16).mask
    blocks = [keep[:, 0:16], keep[:, 16:32], keep[:, 32:40]]
    assert [int((~block).sum()) for block in blocks] == [int(0.3 * 7 * 16), int(0.3 * 7 * 16), int(0.3 * 7 * 8)]


def test_sparsegpt_dead_inputs_are_zeroed():
    x = correlated_inputs(64, 8, seed=10)
    x[:, 3] = 0.0
    result = sparsegpt.prune_layer(torch.randn(4, 8), InputStats.from_inputs(x), 0.25, None)
    assert (result.weight[:, 3] == 0).all()


def test_sparsegpt_nm_needs_blocksize_multiple_of_m():
    with pytest.raises(ValueError, match="multiples of 4"):
        sparsegpt.prune_layer(torch.randn(2, 12), stats_with_norms([1.0] * 12), 0.5, (2, 4), blocksize=6)


def test_sparsegpt_damping_retries_are_recorded():
    indefinite = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # eigenvalues -2, 4: fails until the damping reaches 10
    upper, notes = sparsegpt.inverse_cholesky(indefinite, 0.01)
    assert len(notes) == 3 and "percdamp=1" in notes[-1]
    torch.testing.assert_close(upper.T @ upper, torch.linalg.inv(indefinite + 10 * torch.eye(2)))
    with pytest.raises(RuntimeError, match="Cholesky"):
        sparsegpt.inverse_cholesky(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0.01)


def reference_sparsegpt():
    """The literal port of the reference's fasterprune loop, kept beside its benchmark (bench/sparsegpt_layer.py)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "sparsegpt_layer.py"
    spec = importlib.util.spec_from_file_location("bench_sparsegpt_layer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_loop


@pytest.mark.parametrize("nm", [None, (2, 4), (4, 8)])
def test_sparsegpt_equals_a_literal_port_of_the_reference_loop(nm):
    """Same Hessian, dead input included: identical masks, and fp32 weights equal to round-off (within 4 ulp-scale
    relative error, 5e-7 measured), across several column blocks and a ragged last one. Bit-equality holds only where
    both paths get one kernel order: on AVX-512 CPUs (AMD EPYC) the two float paths differ in the last bits."""
    generator = torch.Generator().manual_seed(11)
    x = correlated_inputs(300, 72, seed=12)
    x[:, 5] = 0.0
    weight = torch.randn(9, 72, generator=generator)
    stats = InputStats.from_inputs(x)
    ours = sparsegpt.prune_layer(weight, stats, 0.5, nm, blocksize=16)
    keep, pruned = reference_sparsegpt()(weight, stats.gram * (2.0 / stats.n_sequences), 0.5, nm, blocksize=16)
    assert torch.equal(ours.mask, keep)
    torch.testing.assert_close(ours.weight, pruned, rtol=4e-6, atol=4e-6)
    planted = pruned.clone()
    planted[0, int(keep[0].nonzero()[0])] += 1e-4  # one kept weight off by a hundred times the tolerance: caught
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours.weight, planted, rtol=4e-6, atol=4e-6)


def test_sparsegpt_runs_the_eager_loop_where_graph_capture_fails(monkeypatch, caplog):
    def no_capture(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(sparsegpt, "_GraphedColumns", no_capture)
    assert sparsegpt._graphed_columns(4, 8, None, torch.device("cpu")) is None
    assert "CUDA graph capture failed (operation not permitted" in caplog.text
