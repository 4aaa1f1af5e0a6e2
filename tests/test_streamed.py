"""Pruning straight from the checkpoint, one block in memory at a time: the very artifact of the in-memory run."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from conftest import make_tiny_model
from prunescope.models import FAMILIES, get_family
from prunescope.models.streamed import CheckpointBlocks
from prunescope.pruning import METHODS, PruneOptions, model_weights, prune_model, save_artifact

VOCAB = 300
CPU = torch.device("cpu")
CALIBRATION = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
ARTIFACT_FILES = ["manifest.json", "masks.safetensors", "weights.safetensors"]


def saved_model(family: str, folder, dtype: torch.dtype = torch.float32, shard_size: str = "5GB"):
    make_tiny_model(family, VOCAB).to(dtype).save_pretrained(folder, max_shard_size=shard_size)
    return folder


def artifact_bytes(folder) -> dict[str, bytes]:
    """The artifact's files; the manifest less where it was written (and the checksum covering that)."""
    files = {name: (folder / name).read_bytes() for name in ARTIFACT_FILES if (folder / name).exists()}
    manifest = json.loads(files.pop("manifest.json"))
    return {**files, "manifest": {key: value for key, value in manifest.items()
                                  if key not in ("written_as", "content_sha256")}}


def streamed_run(model_dir, family, method, dtype, scratch, out, structure="unstructured", protected=None,
                 watch=None):
    checkpoint = CheckpointBlocks(model_dir, dtype, family, scratch)
    keep = METHODS[method].UPDATES_WEIGHTS

    def residence(index, block, device):
        if watch is not None:
            watch(checkpoint.model)
        return checkpoint.resident(index, block, device, keep)

    result = prune_model(checkpoint.model, family, PruneOptions(method, 0.5, structure, batch_size=2),
                         None if method == "magnitude" else CALIBRATION, CPU, protected, residence)
    save_artifact(result, checkpoint.pruned_weight, out, {"model": "tiny"})
    return checkpoint


@pytest.mark.parametrize("family,method,dtype,structure,shards", [
    ("llama", "sparsegpt", "float32", "unstructured", "5GB"),
    ("llama", "wanda", "bfloat16", "2:4", "5GB"),
    ("opt", "sparsegpt", "float16", "unstructured", "100KB"),  # a sharded checkpoint, read through its index
    ("gpt_neox", "ria", "float32", "unstructured", "5GB"),
    ("qwen2", "magnitude", "float32", "unstructured", "5GB"),
    ("mistral", "wanda", "float32", "unstructured", "5GB"),
])
def test_streamed_pruning_writes_the_in_memory_artifact_byte_for_byte(tmp_path, family, method, dtype, structure,
                                                                      shards):
    torch_dtype = getattr(torch, dtype)
    folder = saved_model(family, tmp_path / "model", torch_dtype, shards)
    assert (folder / "model.safetensors.index.json").exists() == (shards == "100KB")
    streamed_run(folder, family, method, dtype, tmp_path / ".", tmp_path / "streamed", structure)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()  # all in memory (load_model)
    result = prune_model(model, family, PruneOptions(method, 0.5, structure, batch_size=2),
                         None if method == "magnitude" else CALIBRATION, CPU)
    save_artifact(result, model_weights(model), tmp_path / "in_memory", {"model": "tiny"})
    written = artifact_bytes(tmp_path / "streamed")
    assert ("weights.safetensors" in written) == METHODS[method].UPDATES_WEIGHTS
    assert written == artifact_bytes(tmp_path / "in_memory")


def test_nsa_guided_streamed_pruning_matches_in_memory(tmp_path):
    protected = {0: [3, 7, 100], 1: list(range(40))}
    folder = saved_model("llama", tmp_path / "model")
    streamed_run(folder, "llama", "wanda", "float32", tmp_path, tmp_path / "streamed", protected=protected)
    model = make_tiny_model("llama", VOCAB)
    result = prune_model(model, "llama", PruneOptions("wanda", 0.5, batch_size=2), CALIBRATION, CPU, protected)
    save_artifact(result, model_weights(model), tmp_path / "in_memory", {"model": "tiny"})
    assert artifact_bytes(tmp_path / "streamed") == artifact_bytes(tmp_path / "in_memory")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_only_the_embeddings_and_one_block_are_ever_in_memory(tmp_path, family):
    folder = saved_model(family, tmp_path / "model")
    adapter = get_family(family)
    seen = []

    def watch(model):
        """At each block's turn: which blocks hold real weights (all must be on meta before it is read in)."""
        seen.append([index for index, block in enumerate(adapter.blocks(model))
                     if any(not p.is_meta for p in block.parameters())])

    checkpoint = streamed_run(folder, family, "sparsegpt", "float32", tmp_path, tmp_path / "artifact", watch=watch)
    assert seen == [[], []]  # two blocks, each read in alone
    pre_block = {id(p) for module in adapter.pre_block_modules(checkpoint.model) for p in module.parameters()}
    real = [name for name, p in checkpoint.model.named_parameters() if not p.is_meta]
    assert real and all(id(p) in pre_block for p in checkpoint.model.parameters() if not p.is_meta), real


def test_a_checkpoint_missing_a_tensor_is_a_clear_error(tmp_path):
    folder = saved_model("llama", tmp_path / "model")
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"no tensor 'model.layers.1.mlp.up_proj.weight'; rerun the prepare_model"):
        streamed_run(folder, "llama", "wanda", "float32", tmp_path, tmp_path / "artifact")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors or model.safetensors.index.json; rerun"):
        CheckpointBlocks(folder, "float32", "llama", tmp_path)
