"""Sequential block driver on tiny random models of every supported family."""

import copy
import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from prunescope.models import FAMILIES, get_family
from prunescope.pruning import PruneOptions, prune_model, pruned_layer_names
from prunescope.pruning.driver import _capture_block_inputs, _hidden_states, _on_device, protected_weights
from prunescope.pruning.owl import OwlOptions

VOCAB = 300
CPU = torch.device("cpu")


def calibration(n: int = 6, seqlen: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, seqlen), generator=torch.Generator().manual_seed(0))


def block_outputs(model, adapter, ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """What each block returned in the model's own forward, batch by batch (the driver's batches) and concatenated."""
    outputs: list[list[torch.Tensor]] = [[] for _ in adapter.blocks(model)]
    handles = [block.register_forward_hook(lambda _m, _a, out, index=index: outputs[index].append(_hidden_states(out)))
               for index, block in enumerate(adapter.blocks(model))]
    try:
        with torch.no_grad():
            for batch in ids.split(batch_size):
                model(input_ids=batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(found) for found in outputs]


def driven_outputs(model, adapter, ids: torch.Tensor, batch_size: int, reuse_block_0: bool = False
                   ) -> list[torch.Tensor]:
    """Each block's output when fed, block by block, the captured hidden states and each block's own arguments
    (or block 0's, as the driver once did)."""
    hidden, arguments = _capture_block_inputs(model, adapter, ids, batch_size, CPU)
    outputs = []
    with torch.no_grad():
        for index, block in enumerate(adapter.blocks(model)):
            calls = arguments[0 if reuse_block_0 else index]
            hidden = [_hidden_states(block(h, *args, **kwargs))
                      for h, (args, kwargs) in zip(hidden, calls, strict=True)]
            outputs.append(torch.cat(hidden))
    return outputs


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_captured_inputs_reproduce_the_model_hidden_states_exactly(family):
    """Every block's captured arguments, fed block by block, give the model's own outputs bit for bit after every
    block (6 blocks; Gemma 3 alternates sliding-window and full layers, its 4-token window shorter than the 16-token
    sequences)."""
    model = make_tiny_model(family, VOCAB, layers=6)
    adapter = get_family(family)
    ids = calibration(5)
    expected = block_outputs(model, adapter, ids, 3)
    got = driven_outputs(model, adapter, ids, 3)
    assert len(got) == len(expected) == 6
    for index, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(ours, theirs), (family, index)


def test_gemma3_blocks_get_their_own_attention_types_arguments():
    """Block 0's arguments are the sliding window's: reused for a full-attention block they change its output, and
    blocks of one type share the very same mask and rotary tensors (held once)."""
    model = make_tiny_model("gemma3_text", VOCAB, layers=4)
    adapter = get_family("gemma3_text")
    ids = calibration(2)
    _, arguments = _capture_block_inputs(model, adapter, ids, 2, CPU)
    kwargs = [calls[0][1] for calls in arguments]
    assert kwargs[0]["attention_mask"] is kwargs[2]["attention_mask"] is not kwargs[1]["attention_mask"]
    assert kwargs[1]["position_embeddings"] is kwargs[3]["position_embeddings"]
    expected = block_outputs(model, adapter, ids, 2)
    reused = driven_outputs(model, adapter, ids, 2, reuse_block_0=True)
    assert torch.equal(reused[0], expected[0]) and not torch.allclose(reused[1], expected[1], atol=1e-3)


def test_capture_computes_no_block_and_restores_their_forwards():
    """The recorders pass the hidden states through: blocks on the meta device are never run (streamed pruning)."""
    model = make_tiny_model("gemma3_text", VOCAB, layers=3)
    adapter = get_family("gemma3_text")
    for block in adapter.blocks(model):
        block.to("meta")
    hidden, arguments = _capture_block_inputs(model, adapter, calibration(4), 3, CPU)
    assert [h.shape for h in hidden] == [(3, 16, 64), (1, 16, 64)] and [len(calls) for calls in arguments] == [2] * 3
    assert all("forward" not in block.__dict__ for block in adapter.blocks(model))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_block_linear_pruned_exactly_and_nothing_else(family):
    model = make_tiny_model(family, VOCAB)
    dense = copy.deepcopy(model)
    result = prune_model(model, family, PruneOptions("wanda", 0.5, batch_size=4), calibration(), CPU)
    names = pruned_layer_names(model, family)
    assert sorted(result.masks) == sorted(names) and len(names) >= 8
    modules = dict(model.named_modules())
    for name in names:
        weight = modules[name].weight
        assert ((weight == 0).sum(dim=1) >= math.floor(weight.shape[1] * 0.5)).all()
        assert ((~result.mask(name)).sum(dim=1) == math.floor(weight.shape[1] * 0.5)).all()
    pruned_weights = {f"{name}.weight" for name in names}
    for (key, before), after in zip(dense.state_dict().items(), model.state_dict().values(), strict=True):
        if key not in pruned_weights:
            assert torch.equal(before, after), key
    assert all(0 < layer["reconstruction_error"] < 1 for layer in result.layers)


@pytest.mark.parametrize("family,method,options", [
    *[(family, "wanda", {}) for family in sorted(FAMILIES)],
    ("llama", "sparsegpt", {"blocksize": 32}),
    ("opt", "sparsegpt", {"blocksize": 32}),
    ("llama", "ria", {}),
])
def test_batched_driver_gives_the_same_masks_as_one_at_a_time(family, method, options):
    masks = []
    for batch_size in (1, 4):
        model = make_tiny_model(family, VOCAB)
        options_at = PruneOptions(method, 0.5, method_options=options, batch_size=batch_size)
        masks.append(prune_model(model, family, options_at, calibration(), CPU).masks)
    assert masks[0].keys() == masks[1].keys()
    assert all(torch.equal(masks[0][name], masks[1][name]) for name in masks[0])


def test_flattened_opt_inputs_count_sequences_whatever_the_batch_size():
    """OPT flattens fc1's and fc2's inputs to (batch x seq, C): their statistics must count sequences, not batches
    (SparseGPT scales H by 2 / n), and sum them in the same order at batch sizes 1 and 4 (bit-identical Grams)."""
    from prunescope.pruning.driver import block_linears
    from prunescope.pruning.stats import collect_inputs

    model, grams = make_tiny_model("opt", VOCAB), []
    block = model.model.decoder.layers[0]
    for batch_size in (1, 4):
        with torch.no_grad(), collect_inputs(block_linears(block), gram=True) as stats:
            for batch in calibration().split(batch_size):
                model(input_ids=batch)
        assert {name: s.n_sequences for name, s in stats.items()} == {name: 6 for name in stats}
        grams.append({name: s.gram for name, s in stats.items()})
    assert any(name.endswith("fc1") for name in grams[0])
    assert all(torch.equal(grams[0][name], grams[1][name]) for name in grams[0])


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "ria"])
def test_nm_through_the_driver(method):
    model = make_tiny_model("llama", VOCAB)
    result = prune_model(model, "llama", PruneOptions(method, 0.5, "2:4", batch_size=3), calibration(), CPU)
    for name in result.masks:
        mask = result.mask(name)
        assert ((~mask).reshape(mask.shape[0], -1, 4).sum(dim=-1) == 2).all(), name
        assert (model.get_submodule(name).weight[~mask] == 0).all()


@pytest.mark.parametrize("method,updates", [("sparsegpt", True), ("wanda", False)])
def test_the_run_holds_one_bit_per_weight_and_sparsegpt_updates_in_place(method, updates):
    """Masks leave the driver bit-packed (numpy.packbits' layout) and kept values are not copied out: the model
    holds them (save_artifact reads them from it)."""
    model = make_tiny_model("opt", VOCAB)
    dense = copy.deepcopy(model)
    result = prune_model(model, "opt", PruneOptions(method, 0.5, batch_size=2), calibration(), CPU)
    assert result.updates_weights == updates and not hasattr(result, "updated_weights")
    for layer in result.layers:
        packed, weight = result.masks[layer["name"]], model.get_submodule(layer["name"]).weight
        mask = result.mask(layer["name"])
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(weight.numel() / 8)
        assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1)))
        assert (weight[~mask] == 0).all()
        dense_kept = dense.get_submodule(layer["name"]).weight[mask]
        assert torch.equal(weight[mask], dense_kept) != updates, layer["name"]


def test_magnitude_without_calibration():
    model = make_tiny_model("llama", VOCAB)
    result = prune_model(model, "llama", PruneOptions("magnitude", 0.5), None, CPU)
    assert all(layer["reconstruction_error"] is None and layer["sparsity"] == 0.5 for layer in result.layers)
    with_data = prune_model(make_tiny_model("llama", VOCAB), "llama", PruneOptions("magnitude", 0.5, batch_size=2),
                            calibration(), CPU)
    assert all(torch.equal(result.masks[name], with_data.masks[name]) for name in result.masks)
    assert all(layer["reconstruction_error"] > 0 for layer in with_data.layers)


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "obc"}, "unknown pruning method 'obc'"),
    ({"method_options": {"alpha": 1.0}}, r"no option\(s\) \['alpha'\]"),
    ({"structure": "2:4", "sparsity": 0.6}, "sparsity is 0.6"),
    ({"method_options": {"protected": None}}, r"no option\(s\) \['protected'\]"),
])
def test_a_wrong_option_fails_when_the_options_are_built(kwargs, message):
    """Before any model is loaded or run."""
    with pytest.raises(ValueError, match=message):
        PruneOptions(**{"method": "wanda", "sparsity": 0.5, **kwargs})


@pytest.mark.parametrize("options,kwargs,message", [
    ({}, {"family": "bloom"}, "supported families: llama, mistral, qwen2, opt, gpt_neox"),
    ({}, {"family": "opt"}, "is model family 'opt' right"),
    ({}, {"calibration": None}, "needs calibration"),
    ({"structure": "2:4"}, {"protected_neurons": {0: [1]}}, "unstructured sparsity only, not 2:4"),
    ({"method_options": {"per_row_alpha": True}}, {"protected_neurons": {0: [1]}}, "per_row_alpha does not support"),
    ({}, {"protected_neurons": {2: [1]}}, "the model has 2 blocks"),
    ({}, {"protected_neurons": {0: [128]}}, r"protected neurons must be in \[0, 128\)"),
])
def test_clear_errors(options, kwargs, message):
    arguments = {"family": "llama", "calibration": calibration(), "device": CPU,
                 "options": PruneOptions("wanda", 0.5, batch_size=2, **options)}
    with pytest.raises(ValueError, match=message):
        prune_model(make_tiny_model("llama", VOCAB), **{**arguments, **kwargs})


PRUNING = {"calibration_batch_size": 8, "owl": {"m": 4.0, "lambda": 0.1}, "magnitude": {},
           "wanda": {"per_row_alpha": False}, "sparsegpt": {"percdamp": 0.02, "blocksize": 64}}


@pytest.mark.parametrize("method,pattern,expected", [
    ("wanda", "unstructured-0.5", PruneOptions("wanda", 0.5, "unstructured", {"per_row_alpha": False}, None, 8)),
    ("sparsegpt", "2of4-0.5", PruneOptions("sparsegpt", 0.5, "2:4", {"percdamp": 0.02, "blocksize": 64}, None, 8)),
    ("magnitude", "owl-0.7", PruneOptions("magnitude", 0.7, "unstructured", {}, OwlOptions(4.0, 0.1), 8)),
])
def test_options_from_params_read_the_variant_pattern_key(method, pattern, expected):
    """What the prune rule runs: the method's options from params.yaml's pruning section; an owl-<s> key is
    unstructured at mean s with pruning.owl's m and lambda."""
    assert PruneOptions.from_params(PRUNING, method, pattern) == expected


PROTECTED_NEURONS = {0: [3, 7, 100], 1: list(range(40))}  # block 1 covers SparseGPT's whole first 32-column block


@pytest.mark.parametrize("family,linears", [
    ("llama", {"mlp.gate_proj": "rows", "mlp.up_proj": "rows", "mlp.down_proj": "columns"}),
    ("opt", {"fc1": "rows", "fc2": "columns"}),
    ("gpt_neox", {"mlp.dense_h_to_4h": "rows", "mlp.dense_4h_to_h": "columns"}),
])
def test_protected_weights_are_the_neurons_rows_and_columns(family, linears):
    block = get_family(family).blocks(make_tiny_model(family, VOCAB))[0]
    masks = protected_weights(get_family(family), block, [3, 7])
    assert masks.keys() == linears.keys()
    for name, kind in linears.items():
        mask = masks[name] if kind == "rows" else masks[name].T
        assert mask.any(dim=1).nonzero().flatten().tolist() == [3, 7] and mask[[3, 7]].all(), name


@pytest.mark.parametrize("family,method,options", [
    ("llama", "magnitude", {}),
    ("llama", "wanda", {}),
    ("llama", "sparsegpt", {"blocksize": 32}),
    ("llama", "ria", {}),
    ("llama", "ria", {"per_row": True}),
    ("opt", "wanda", {}),
    ("gpt_neox", "magnitude", {}),
])
def test_protected_neurons_kept_at_equal_layer_sparsity(family, method, options):
    data = None if method == "magnitude" else calibration()
    options = PruneOptions(method, 0.5, method_options=options, batch_size=3)
    plain = prune_model(make_tiny_model(family, VOCAB), family, options, data, CPU)
    model = make_tiny_model(family, VOCAB)
    result = prune_model(model, family, options, data, CPU, PROTECTED_NEURONS)
    adapter = get_family(family)
    expected = {f"{adapter.blocks_path}.{index}.{name}": mask for index, block in enumerate(adapter.blocks(model))
                for name, mask in protected_weights(adapter, block, PROTECTED_NEURONS[index]).items()}
    assert len(expected) == 2 * len(protected_weights(adapter, adapter.blocks(model)[0], [0]))
    for layer, plain_layer in zip(result.layers, plain.layers, strict=True):
        name = layer["name"]
        mask = result.mask(name)
        protected = expected.get(name, torch.zeros_like(mask))
        assert (~mask).sum() == (~plain.mask(name)).sum() and layer["sparsity"] == plain_layer["sparsity"], name
        assert mask[protected].all() and (model.get_submodule(name).weight[~mask] == 0).all(), name
        assert layer["protected"] == protected.sum() and plain_layer.keys() == layer.keys() - {"protected"}
    assert all(not torch.equal(result.masks[name], plain.masks[name]) for name in expected)


def test_a_model_dispatched_by_accelerate_is_refused_with_the_fix():
    """The driver moves blocks itself; accelerate's hooks would move them back (or reload offloaded weights)."""
    from accelerate import dispatch_model

    model = dispatch_model(make_tiny_model("llama", VOCAB), device_map={"": "cpu"}, force_hooks=True)
    with pytest.raises(ValueError, match=r"not dispatched by accelerate.*load_model\(\.\.\., device='cpu'\)"):
        prune_model(model, "llama", PruneOptions("wanda", 0.5, batch_size=2), calibration(), CPU)


def test_a_block_goes_back_to_the_device_it_came_from(monkeypatch):
    """module.to moves the parameter objects themselves, so home must be read before the move (on a GPU every block
    used to stay there). Moves are recorded here with CPU and meta tensors standing in for two devices."""
    moves = []

    def move(module, device):
        moves.append(torch.device(device))
        for parameter in module.parameters():  # the same object, now on `device`, as module.to leaves it
            torch.utils.swap_tensors(parameter, torch.nn.Parameter(torch.empty(parameter.shape, device=device)))
        return module

    layer = torch.nn.Linear(2, 2)
    monkeypatch.setattr(torch.nn.Module, "to", move)
    with _on_device(layer, torch.device("meta")):
        assert layer.weight.device.type == "meta"
    assert moves == [torch.device("meta"), torch.device("cpu")] and layer.weight.device.type == "cpu"
