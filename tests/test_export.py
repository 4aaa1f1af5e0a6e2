"""Exports of pruned variants: a standard transformers checkpoint that from_pretrained loads and that computes exactly
what the base model with the artifact applied in memory computes; the same in compressed-tensors' sparse format,
loaded back by transformers 4 with compressed-tensors 0.14 (their own venv); a bad artifact or format writes nothing;
the workflow plans the export rule on demand."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_tiny_model
from prunescope.config import parse_pattern_key
from prunescope.io import read_result, sha256_file
from prunescope.models.prepare import load_model
from prunescope.pruning import (
    PruneOptions,
    apply_artifact,
    compressed_tensors_peer,
    model_weights,
    prune_model,
    save_artifact,
)
from prunescope.pruning.export import COMPRESSED_TENSORS_PYTHON, EXPORT_MANIFEST, export_variant
from test_workflow import ROOT, snakemake, workdir_with

CPU = torch.device("cpu")
TEXT = "The movie was wonderful and the acting was great."


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_tokenizer) -> dict:
    """Per family: a tiny random model saved as the prepare rule saves models (weights, config, tokenizer)."""
    made = {}
    for family in ("llama", "opt"):
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        make_tiny_model(family, len(tiny_tokenizer)).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        made[family] = folder
    return made


def pruned_artifact(model_dir, family: str, method: str, pattern: str, folder):
    """The artifact the prune rule writes for this variant (pruned in memory here: bit-equal to the streamed run)."""
    structure, sparsity = parse_pattern_key(pattern)
    model, _ = load_model(model_dir, "float32", CPU)
    calibration = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    options = {"blocksize": 16} if method == "sparsegpt" else {}
    result = prune_model(model, family, PruneOptions(method, sparsity, structure, options, batch_size=2),
                         None if method == "magnitude" else calibration, CPU)
    save_artifact(result, model_weights(model), folder, {"model": f"tiny-{family}", "method": method,
                                                         "pattern": pattern, "calibration": "none"})
    return folder


@pytest.mark.parametrize(("family", "method", "pattern"), [
    ("llama", "magnitude", "unstructured-0.5"),
    ("llama", "sparsegpt", "unstructured-0.5"),  # kept values rewritten, not only masked
    ("llama", "wanda", "2of4-0.5"),
    ("opt", "sparsegpt", "2of4-0.5"),  # tied head, biases, another block layout
])
def test_safetensors_export_loads_with_from_pretrained_and_gives_the_pruned_models_logits(
        saved_models, tiny_tokenizer, tmp_path, family, method, pattern):
    model_dir = saved_models[family]
    artifact = pruned_artifact(model_dir, family, method, pattern, tmp_path / "artifact")
    export_variant(model_dir, "float32", artifact, tmp_path / "export", "safetensors")

    expected, _ = load_model(model_dir, "float32", CPU)
    apply_artifact(expected, artifact)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert tokenizer(TEXT).input_ids == tiny_tokenizer(TEXT).input_ids
    ids = torch.tensor([tokenizer(TEXT).input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected(ids).logits)
    for (name, want), got in zip(expected.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(want.view(torch.uint8), got.view(torch.uint8)), name  # the artifact's zeros, +0.0 too

    record = read_result(tmp_path / "export" / EXPORT_MANIFEST, "export")
    assert record["format"] == "safetensors" and record["dtype"] == "float32"
    assert record["variant"] == {"model": f"tiny-{family}", "method": method, "pattern": pattern,
                                 "calibration": "none"}
    assert record["structure"] == parse_pattern_key(pattern)[0] and record["sparsity"] == 0.5
    assert record["source_artifact"]["manifest_sha256"] == sha256_file(artifact / "manifest.json")
    files = sorted(path.name for path in (tmp_path / "export").iterdir() if path.name != EXPORT_MANIFEST)
    assert sorted(record["files"]) == files and "tokenizer.json" in files
    assert all(sha256_file(tmp_path / "export" / name) == digest for name, digest in record["files"].items())


@pytest.mark.parametrize(("family", "method", "pattern", "sparse_format", "readers"), [
    ("llama", "sparsegpt", "unstructured-0.5", "sparse-bitmask", ["compressed-tensors"]),
    ("opt", "wanda", "2of4-0.5", "sparse-24-bitmask", ["compressed-tensors", "transformers"]),
])
def test_compressed_tensors_export_is_read_back_by_compressed_tensors_and_transformers(
        saved_models, tiny_tokenizer, tmp_path, family, method, pattern, sparse_format, readers):
    """Other readers than ours (compressed-tensors 0.14.0.1 and transformers 4, in their own venv) decompress the
    checkpoint and compute the in-memory pruned model's logits; the pruned Linears are stored compressed.
    (transformers 4.57 cannot load sparse-bitmask: compressed_tensors_peer.load.)"""
    model_dir = saved_models[family]
    artifact = pruned_artifact(model_dir, family, method, pattern, tmp_path / "artifact")
    export_variant(model_dir, "float32", artifact, tmp_path / "dense", "safetensors")
    export_variant(model_dir, "float32", artifact, tmp_path / "export", "compressed-tensors")

    config = json.loads((tmp_path / "export" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    sparsity = config["sparsity_config"]
    structure = parse_pattern_key(pattern)[0]
    assert (sparsity["format"], sparsity["sparsity_structure"]) == (sparse_format, structure)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert sparsity["targets"] == sorted(layer["name"] for layer in manifest["layers"])
    assert sparsity["global_sparsity"] == pytest.approx(0.5, abs=0.02)
    record = read_result(tmp_path / "export" / EXPORT_MANIFEST, "export")
    assert record["format"] == "compressed-tensors" and record["structure"] == structure
    assert record["sparsity_config"] == sparsity and record["versions"]["compressed-tensors"] == "0.14.0.1"
    stored = load_file(tmp_path / "export" / "block-00000.safetensors")
    layer = manifest["layers"][0]["name"]
    assert f"{layer}.weight" not in stored and f"{layer}.bitmask" in stored
    assert ((tmp_path / "export" / "block-00000.safetensors").stat().st_size
            < 0.8 * (tmp_path / "dense" / "block-00000.safetensors").stat().st_size)

    expected, _ = load_model(model_dir, "float32", CPU)
    apply_artifact(expected, artifact)
    ids = torch.tensor([tiny_tokenizer(TEXT).input_ids])
    save_file({"input_ids": ids}, tmp_path / "ids.safetensors")
    with torch.no_grad():
        want = expected(ids).logits
    for reader in readers:
        subprocess.run([str(COMPRESSED_TENSORS_PYTHON), compressed_tensors_peer.__file__, "logits", "--reader", reader,
                        *(str(tmp_path / name) for name in ("export", "ids.safetensors", "logits.safetensors"))],
                       check=True)
        torch.testing.assert_close(load_file(tmp_path / "logits.safetensors")["logits"], want, rtol=1e-5, atol=1e-5)


def test_a_damaged_artifact_or_unknown_format_is_one_error_and_writes_nothing(saved_models, tmp_path):
    model_dir = saved_models["llama"]
    artifact = pruned_artifact(model_dir, "llama", "magnitude", "unstructured-0.5", tmp_path / "artifact")
    export_variant(model_dir, "float32", artifact, tmp_path / "export")
    before = {path.name: path.read_bytes() for path in (tmp_path / "export").iterdir()}
    masks = artifact / "masks.safetensors"
    masks.write_bytes(masks.read_bytes()[:-8])
    for out in (tmp_path / "export", tmp_path / "fresh"):
        with pytest.raises(ValueError, match=r"masks\.safetensors: sha256 differs .* rerun the prune rule"):
            export_variant(model_dir, "float32", artifact, out)
    with pytest.raises(ValueError, match=r"^unknown export format 'gguf': one of safetensors, compressed-tensors$"):
        export_variant(model_dir, "float32", artifact, tmp_path / "fresh", "gguf")
    with pytest.raises(FileNotFoundError, match=r"compressed-tensors' python .*missing does not exist: `make export"):
        export_variant(model_dir, "float32", artifact, tmp_path / "fresh", "compressed-tensors", tmp_path / "missing")
    assert not (tmp_path / "fresh").exists()
    assert {path.name: path.read_bytes() for path in (tmp_path / "export").iterdir()} == before  # the last good one
    assert sorted(path.name for path in tmp_path.iterdir()) == ["artifact", "export"]  # no temporary left behind


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_dry_run_plans_one_variants_export_on_demand(tmp_path, params):
    """`make export VARIANT=...` asks for one export: it is planned with the prune it needs, nothing else."""
    target = "results/exports/smollm2-135m/magnitude/unstructured-0.5/none/safetensors"
    run = snakemake(workdir_with(tmp_path, params), "--dry-run", target)
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    assert dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)) == {
        "export": "1", "prune": "1", "prepare_model": "1", "fetch_archive": "1", "total": "4"}


@pytest.mark.parametrize(("target", "message"), [
    ("smollm2-135m/magnitude/unstructured-0.5/none/gguf",
     "unknown export format 'gguf': one of safetensors, compressed-tensors"),
    ("smollm2-135m/magnitude/2of4-0.5/none/safetensors",
     "no pruned variant smollm2-135m/magnitude/2of4-0.5/none: it is not in grid 'mini' and "
     "results/pruned/smollm2-135m/magnitude/2of4-0.5/none does not exist"),
])
def test_a_bad_export_target_is_one_clear_error(tmp_path, params, target, message):
    run = snakemake(workdir_with(tmp_path, params), "--dry-run", f"results/exports/{target}")
    assert run.returncode != 0 and message in run.stdout + run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "results").exists()
