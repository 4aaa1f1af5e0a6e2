"""OWL layer sparsity: hand-computed ratios and sparsities, and a planted outlier block that keeps more weights."""

import math

import pytest
import torch

from conftest import make_tiny_model
from prunescope.pruning import PruneOptions, prune_model
from prunescope.pruning.owl import OwlOptions, block_sparsities, outlier_ratio

VOCAB = 300
CALIBRATION = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))


def test_outlier_ratio_by_hand():
    # mean of all ten scores = (9 + 31) / 10 = 4; above 5 x 4 = 20: only the 31
    assert outlier_ratio([torch.ones(3, 3), torch.tensor([31.0])], m=5.0) == pytest.approx(0.1)
    assert outlier_ratio([torch.ones(4)], m=5.0) == 0.0


def test_block_sparsities_by_hand():
    # equal sizes: D 0.1, 0.2, 0.3 -> 0.5 + 0.08 - 0.16 * (0, 0.5, 1) = 0.58, 0.50, 0.42, already mean 0.5
    assert block_sparsities([0.1, 0.2, 0.3], [1, 1, 1], 0.5, 0.08) == pytest.approx([0.58, 0.50, 0.42])
    # sizes 1, 1, 2: weighted mean (0.58 + 0.50 + 2 x 0.42) / 4 = 0.48, so every block moves up by 0.02
    shifted = block_sparsities([0.1, 0.2, 0.3], [1, 1, 2], 0.5, 0.08)
    assert shifted == pytest.approx([0.60, 0.52, 0.44])
    assert math.isclose((shifted[0] + shifted[1] + 2 * shifted[2]) / 4, 0.5, rel_tol=0, abs_tol=1e-15)
    assert block_sparsities([0.2, 0.2], [5, 7], 0.7, 0.08) == [0.7, 0.7]  # no outlier contrast: uniform
    with pytest.raises(ValueError, match=r"leave \[0, 1\) at sparsity 0.95 with lambda 0.1: lower"):
        block_sparsities([0.0, 1.0], [1, 1], 0.95, 0.1)


def planted_outlier_model():
    """Block 1's down_proj gets 3% of its weights 200x larger: far more scores above 5x the block's mean."""
    model = make_tiny_model("llama", VOCAB)
    weight = model.model.layers[1].mlp.down_proj.weight
    planted = torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) < 0.03
    with torch.no_grad():
        weight[planted] *= 200.0
    return model


def test_a_planted_outlier_block_gets_the_lower_sparsity_and_the_mean_stays_s():
    model = planted_outlier_model()
    result = prune_model(model, "llama", PruneOptions("wanda", 0.7, owl=OwlOptions(m=5.0, lam=0.08), batch_size=2),
                         CALIBRATION, "cpu")
    owl = result.layer_sparsity
    assert owl["kind"] == "owl" and owl["m"] == 5.0 and owl["lambda"] == 0.08
    assert owl["blocks"] == pytest.approx([0.78, 0.62])  # two equal blocks: s + lambda and s - lambda
    for layer in result.layers:
        block = int(layer["name"].split(".")[2])
        per_row = layer["shape"][1]
        assert layer["sparsity"] == pytest.approx(math.floor(per_row * owl["blocks"][block]) / per_row)
    sizes = {0: 0, 1: 0}
    for layer in result.layers:
        sizes[int(layer["name"].split(".")[2])] += math.prod(layer["shape"])
    weighted = sum(owl["blocks"][block] * size for block, size in sizes.items()) / sum(sizes.values())
    assert math.isclose(weighted, 0.7, rel_tol=0, abs_tol=1e-12)


def test_uniform_is_the_default_and_unchanged():
    plain = prune_model(make_tiny_model("llama", VOCAB), "llama", PruneOptions("magnitude", 0.7, batch_size=2),
                        CALIBRATION, "cpu")
    assert plain.layer_sparsity == {"kind": "uniform"}
    assert all(layer["sparsity"] == pytest.approx(0.7, abs=0.01) for layer in plain.layers)
    owl = prune_model(planted_outlier_model(), "llama", PruneOptions("magnitude", 0.7, owl=OwlOptions(), batch_size=2),
                      CALIBRATION, "cpu")
    assert owl.layer_sparsity["blocks"][1] < 0.7 < owl.layer_sparsity["blocks"][0]  # any method, magnitude too


@pytest.mark.parametrize("structure,calibration", [("2:4", CALIBRATION), ("unstructured", None)])
def test_owl_needs_unstructured_sparsity_and_calibration(structure, calibration):
    with pytest.raises(ValueError, match="OWL layer sparsity needs unstructured sparsity .* and calibration data"):
        prune_model(make_tiny_model("llama", VOCAB), "llama",
                    PruneOptions("magnitude", 0.5, structure, owl=OwlOptions(), batch_size=2), calibration, "cpu")
