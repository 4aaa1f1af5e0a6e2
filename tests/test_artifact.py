"""Artifact round trip: base model + artifact == the in-memory pruned model, bit for bit; byte-stable files."""

import copy
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_model
from prunescope.io import ChecksumError, read_json, read_result, sha256_file, write_json, write_result
from prunescope.pruning import (
    PruneOptions,
    apply_artifact,
    model_weights,
    prune_model,
    save_artifact,
    write_measurements,
)
from prunescope.pruning.artifact import read_manifest, save_streamed

VOCAB = 300
CALIBRATION = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))


def pruned(method: str, family: str = "llama", dtype: torch.dtype = torch.float32, **options):
    model = make_tiny_model(family, VOCAB).to(dtype)
    dense = copy.deepcopy(model)
    result = prune_model(model, family, PruneOptions(method, 0.5, method_options=options, batch_size=2), CALIBRATION,
                         torch.device("cpu"))
    return dense, model, result


@pytest.mark.parametrize("method,dtype,options", [
    ("wanda", torch.float32, {}),
    ("sparsegpt", torch.float32, {"blocksize": 16}),
    ("sparsegpt", torch.bfloat16, {"blocksize": 16}),
    ("magnitude", torch.float16, {}),
])
def test_round_trip_is_bit_exact(tmp_path, method, dtype, options):
    dense, model, result = pruned(method, dtype=dtype, **options)
    save_artifact(result, model_weights(model), tmp_path / "artifact", {"base_model": "tiny-llama"})
    manifest = apply_artifact(dense, tmp_path / "artifact")
    for (name, expected), actual in zip(model.state_dict().items(), dense.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name
        assert torch.equal(expected.view(torch.uint8), actual.view(torch.uint8)), name  # +0.0 vs -0.0 too
    assert manifest["base_model"] == "tiny-llama" and manifest["method"] == method
    assert manifest["achieved_sparsity"] == 0.5
    assert (tmp_path / "artifact" / "weights.safetensors").exists() == (method == "sparsegpt") == result.updates_weights
    if result.updates_weights:
        assert {values.dtype for values in load_file(tmp_path / "artifact" / "weights.safetensors").values()} == {dtype}


def test_identical_inputs_give_byte_identical_files(tmp_path):
    _, model, first = pruned("sparsegpt", blocksize=16)
    names = ["manifest.json", "masks.safetensors", "weights.safetensors"]
    save_artifact(first, model_weights(model), tmp_path / "a", {"base_model": "tiny"})
    written = {name: (tmp_path / "a" / name).read_bytes() for name in names}
    save_artifact(first, model_weights(model), tmp_path / "a", {"base_model": "tiny"})
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == written[name], name


@pytest.mark.parametrize("method,options", [("wanda", {}), ("sparsegpt", {"blocksize": 16})])
def test_rerun_gives_the_same_artifact_and_keeps_measurements_apart(tmp_path, method, options):
    """Two runs from fresh models: same masks, kept weights and manifest; the measurements, which may differ,
    are written to a file of their own."""
    names = ["masks.safetensors", "manifest.json"] + (["weights.safetensors"] if method == "sparsegpt" else [])
    written = {}
    for run_number in (1, 2):
        _, model, result = pruned(method, **options)
        save_artifact(result, model_weights(model), tmp_path / "a", {"base_model": "tiny"})
        write_measurements(result, tmp_path / f"run{run_number}.json")
        written[run_number] = {name: (tmp_path / "a" / name).read_bytes() for name in names}
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == sorted(names)
    assert written[1] == written[2]
    manifest, run = read_manifest(tmp_path / "a"), read_result(tmp_path / "run1.json", "prune")
    assert not {"seconds", "peak_memory_bytes"} & set(manifest)
    assert not any(note.startswith("peak_memory_bytes:") for note in manifest["notes"])
    assert run["seconds"] > 0 and run["peak_memory_bytes"] > 0 and run["notes"][0].startswith("peak_memory_bytes:")


def test_truncated_masks_file_is_a_clear_error(tmp_path):
    dense, model, result = pruned("wanda")
    save_artifact(result, model_weights(model), tmp_path / "artifact", {})
    masks = tmp_path / "artifact" / "masks.safetensors"
    masks.write_bytes(masks.read_bytes()[:-100])
    before = copy.deepcopy(dense.state_dict())
    with pytest.raises(ValueError, match=r"masks\.safetensors: sha256 .* rerun the prune rule"):
        apply_artifact(dense, tmp_path / "artifact")
    assert all(torch.equal(before[key], value) for key, value in dense.state_dict().items())


def test_mismatched_model_is_a_clear_error(tmp_path):
    _, model, result = pruned("wanda")
    save_artifact(result, model_weights(model), tmp_path / "artifact", {})
    with pytest.raises(ValueError, match="does not fit this model.*rerun the prune rule"):
        apply_artifact(make_tiny_model("opt", VOCAB), tmp_path / "artifact")
    resized = make_tiny_model("llama", VOCAB)
    resized.model.layers[1].mlp.down_proj = torch.nn.Linear(64, 64, bias=False)
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.down_proj has shape \[64, 128\] but the model's is"):
        apply_artifact(resized, tmp_path / "artifact")
    with pytest.raises(ValueError, match="pruned in float32 but the model is torch.float16"):
        apply_artifact(make_tiny_model("llama", VOCAB).half(), tmp_path / "artifact")
    (tmp_path / "artifact" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest.json: missing"):
        apply_artifact(make_tiny_model("llama", VOCAB), tmp_path / "artifact")


def test_mask_only_artifact_is_about_a_sixteenth_of_fp16_weights(tmp_path):
    _, model, result = pruned("wanda")
    save_artifact(result, model_weights(model), tmp_path / "artifact", {})
    fp16_bytes = 2 * sum(math.prod(layer["shape"]) for layer in result.layers)
    ratio = (tmp_path / "artifact" / "masks.safetensors").stat().st_size / fp16_bytes
    assert 1 / 16 <= ratio < 1 / 16 * 1.25  # the rest is the safetensors header of this tiny model


def test_manifest_records_layers_and_hashes_and_rejects_conflicts(tmp_path):
    _, model, result = pruned("wanda")
    save_artifact(result, model_weights(model), tmp_path / "artifact", {"calibration": "c4-32x256"})
    manifest = read_manifest(tmp_path / "artifact")
    assert set(manifest["files"]) == {"masks.safetensors"}
    assert [layer["name"] for layer in manifest["layers"]] == list(result.masks)
    assert manifest["calibration"] == "c4-32x256" and manifest["structure"] == "unstructured"
    with pytest.raises(ValueError, match=r"\['method'\] disagree"):
        save_artifact(result, model_weights(model), tmp_path / "other", {"method": "sparsegpt"})
    assert not (tmp_path / "other").exists()


def test_edited_or_swapped_manifest_is_a_clear_error(tmp_path):
    """The manifest checks itself: an edited field (a sparsity, a layer's error) or a manifest copied from another
    grid point is refused before the artifact is applied."""
    dense, model, result = pruned("wanda")
    save_artifact(result, model_weights(model), tmp_path / "a", {})
    save_artifact(result, model_weights(model), tmp_path / "b", {})
    manifest = read_json(tmp_path / "a" / "manifest.json")
    write_json(tmp_path / "a" / "manifest.json", {**manifest, "sparsity": 0.3})
    with pytest.raises(ChecksumError, match=r"a/manifest\.json does not match its own checksum.*prune rule"):
        apply_artifact(dense, tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_bytes((tmp_path / "b" / "manifest.json").read_bytes())
    with pytest.raises(ChecksumError, match=r"was written as .*b/manifest\.json.*another grid point"):
        read_manifest(tmp_path / "a")


def test_kept_values_that_do_not_fill_the_mask_are_a_clear_error_and_touch_nothing(tmp_path):
    dense, model, result = pruned("sparsegpt", blocksize=16)
    save_artifact(result, model_weights(model), tmp_path / "artifact", {})
    weights, manifest_path = tmp_path / "artifact" / "weights.safetensors", tmp_path / "artifact" / "manifest.json"
    values = load_file(weights)
    name = sorted(values)[0]
    kept = values[name].numel()
    save_file({**values, name: values[name][:-1]}, weights)  # one value short, with consistent hashes
    manifest = read_manifest(tmp_path / "artifact")
    write_result(manifest_path, {**manifest, "files": {**manifest["files"], weights.name: sha256_file(weights)}},
                 written_as=manifest_path)
    before = copy.deepcopy(dense.state_dict())
    with pytest.raises(ValueError, match=rf"weights\.safetensors: {name} holds {kept - 1} values for {kept} kept"):
        apply_artifact(dense, tmp_path / "artifact")
    assert all(torch.equal(before[key], value) for key, value in dense.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_streamed_kept_values_are_byte_for_byte_what_safetensors_writes(tmp_path, dtype):
    generator = torch.Generator().manual_seed(3)
    tensors = {name: torch.randn(length, generator=generator).to(dtype)
               for name, length in [("model.layers.1.mlp.up_proj", 7), ("model.layers.0.self_attn.q_proj", 40),
                                    ("model.layers.10.mlp.down_proj", 1), ("empty", 0)]}
    save_file(tensors, tmp_path / "reference.safetensors")
    order = []
    save_streamed(tmp_path / "streamed.safetensors", {name: len(values) for name, values in tensors.items()}, dtype,
                  lambda name: order.append(name) or tensors[name])
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    assert order == sorted(tensors)  # one tensor asked for at a time, in file order
    with pytest.raises(ValueError, match="empty: 1 .* values, expected 0"):
        save_streamed(tmp_path / "bad.safetensors", {"empty": 0}, dtype, lambda name: torch.zeros(1, dtype=dtype))
