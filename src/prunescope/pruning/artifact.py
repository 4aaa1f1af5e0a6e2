"""Pruned-model artifact: bit-packed keep-masks, SparseGPT's kept values and a manifest with file hashes.

Base model + artifact gives back the in-memory pruned model bit for bit: pruned entries are +0.0 both ways and
SparseGPT's kept values are stored in the layer dtype. The artifact is byte-stable (sorted keys, no timestamps),
so identical inputs give an identical folder and the same DVC hash. What a rerun measures differently (wall time,
peak memory) is written apart from it, by write_measurements, to a file of its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prunescope.io import atomic_path, read_result, sha256_file, write_result
from prunescope.models.families import get_family
from prunescope.pruning.driver import PruneResult, pruned_layer_names
from prunescope.pruning.masks import kept_count, unpack_mask

MASKS = "masks.safetensors"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
MEMORY_NOTE = "peak_memory_bytes:"  # the driver's note on how peak memory was measured belongs with the measurement
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_artifact(result: PruneResult, pruned_weight: Callable[[str], torch.Tensor], out_dir: str | os.PathLike,
                  manifest: dict[str, Any]) -> None:
    """Atomically write out_dir: masks, kept weights (weight-updating methods only) and manifest.json.

    The kept values are read one layer at a time through pruned_weight(layer name) (model_weights(model) for an
    in-memory model) and streamed to the file, so saving needs one layer's values beside the model, not a copy of
    half of it. `manifest` (base model, calibration key, hashes...) is merged with the run's own deterministic
    record; a key given with a different value than the run's is an error rather than silently overwritten.
    """
    with atomic_path(out_dir, directory=True) as folder:
        shapes = {layer["name"]: layer["shape"] for layer in result.layers}
        save_file(result.masks, folder / MASKS, metadata={"shapes": json.dumps(shapes, sort_keys=True)})
        if result.updates_weights:
            kept = {name: kept_count(packed) for name, packed in result.masks.items()}
            save_streamed(folder / WEIGHTS, kept, _layer_dtype(result),
                          lambda name: _kept_values(pruned_weight, result, name))
        files = sorted(path.name for path in folder.iterdir())
        pruned = sum(layer["sparsity"] * math.prod(layer["shape"]) for layer in result.layers)
        record = {
            "method": result.method,
            "method_options": result.method_options,
            "family": result.family,
            "sparsity": result.sparsity,
            "structure": result.structure,
            "achieved_sparsity": pruned / sum(math.prod(layer["shape"]) for layer in result.layers),
            "layers": result.layers,
            "layer_sparsity": result.layer_sparsity,
            "reconstruction_error_method": result.error_method,
            "notes": [note for note in result.notes if not note.startswith(MEMORY_NOTE)],
            "files": {name: sha256_file(folder / name) for name in files},
        }
        clashes = sorted(key for key in set(manifest) & set(record) if manifest[key] != record[key])
        if clashes:
            raise ValueError(f"manifest keys {clashes} disagree with the pruning result")
        write_result(folder / MANIFEST, {**manifest, **record}, written_as=Path(out_dir) / MANIFEST)


def save_streamed(path: Path, lengths: dict[str, int], dtype: torch.dtype,
                  values: Callable[[str], torch.Tensor]) -> None:
    """A safetensors file of 1-D tensors of one dtype, byte for byte what safetensors' save_file writes, but
    written one tensor at a time: values(name) is called in file order and only its result is in memory."""
    size = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name in sorted(lengths):  # safetensors orders the tensors of one dtype by name
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": [lengths[name]],
                        "data_offsets": [offset, offset + lengths[name] * size]}
        offset += lengths[name] * size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little") + encoded)
        for name in header:
            tensor = values(name).detach().cpu().contiguous()
            if tensor.dtype != dtype or tensor.numel() != lengths[name]:
                raise ValueError(f"{name}: {tensor.numel()} {tensor.dtype} values, expected {lengths[name]} {dtype}")
            handle.write(tensor.view(torch.uint8).numpy().tobytes())


def _layer_dtype(result: PruneResult) -> torch.dtype:
    """The one dtype of the pruned layers (a model mixing dtypes across them is an error)."""
    dtypes = {layer["dtype"] for layer in result.layers}
    if len(dtypes) != 1:
        raise ValueError(f"pruned layers mix dtypes {sorted(dtypes)}; load the model in one dtype")
    return getattr(torch, dtypes.pop())


def model_weights(model: torch.nn.Module) -> Callable[[str], torch.Tensor]:
    """save_artifact's pruned_weight for a model held in memory."""
    return lambda name: model.get_submodule(name).weight


def _kept_values(pruned_weight: Callable[[str], torch.Tensor], result: PruneResult, name: str) -> torch.Tensor:
    """Layer `name`'s kept weights in row-major order."""
    weight = pruned_weight(name)
    return weight[result.mask(name).to(weight.device)]


def write_measurements(result: PruneResult, path: str | os.PathLike) -> None:
    """The run's wall time and peak memory (and how it was measured), atomically: the one pruning output that
    differs between two runs of the same inputs, so it is kept out of the artifact folder."""
    write_result(path, {"seconds": result.seconds, "peak_memory_bytes": result.peak_memory_bytes,
                      "notes": [note for note in result.notes if note.startswith(MEMORY_NOTE)]})


def read_manifest(artifact_dir: str | os.PathLike) -> dict[str, Any]:
    """An artifact's manifest.json, checked against its own checksum."""
    return read_result(Path(artifact_dir) / MANIFEST, "prune")


def pruning_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """What made a variant, for its evaluation results to embed and aggregation to check against params.yaml
    (config.variant_options): the method's options and how block sparsities were set (OWL's m and lambda, not the
    per-block values they produced)."""
    return {"method_options": manifest["method_options"],
            "layer_sparsity": {key: value for key, value in manifest["layer_sparsity"].items() if key != "blocks"}}


def apply_artifact(model: torch.nn.Module, artifact_dir: str | os.PathLike) -> dict[str, Any]:
    """Verify the artifact against its hashes and `model`, then prune `model` in place; returns the manifest.

    Everything is checked before any weight changes, so a bad artifact leaves the model untouched. Beside the
    model, memory holds the bit-packed masks (1 bit per weight) and one layer's unpacked mask and kept values at a
    time: masks are unpacked and SparseGPT's kept values read layer by layer, once to check and once to apply.
    """
    with verified_artifact(model, artifact_dir) as (manifest, prune):
        with torch.no_grad():
            for layer in manifest["layers"]:
                prune(layer["name"], model.get_submodule(layer["name"]).weight)
    return manifest


@contextlib.contextmanager
def verified_artifact(model: torch.nn.Module, artifact_dir: str | os.PathLike
                      ) -> Iterator[tuple[dict[str, Any], Callable[[str, torch.Tensor], None]]]:
    """(manifest, prune) once the artifact is checked against its hashes and against `model`'s pruned Linears
    (names, shapes, dtypes: a skeleton on the meta device will do); prune(layer name, weight) prunes that layer's
    weight tensor in place, reading its mask and kept values only then."""
    folder = Path(artifact_dir)

    def fail(file: str, why: str) -> ValueError:
        return ValueError(f"{folder / file}: {why}; rerun the prune rule to rebuild this artifact")

    try:
        manifest = read_manifest(folder)  # a damaged manifest is a ChecksumError naming it and the prune rule
    except OSError as error:
        raise fail(MANIFEST, f"missing ({error.strerror})") from error
    files, family, layers = manifest["files"], manifest["family"], manifest["layers"]
    if MASKS not in files:
        raise fail(MANIFEST, f"lists no {MASKS}")
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise fail(name, "missing")
        if sha256_file(folder / name) != digest:
            raise fail(name, "sha256 differs from the manifest (truncated or modified)")
    packed = load_file(folder / MASKS)  # one bit per weight
    with safe_open(folder / MASKS, framework="pt") as handle:
        shapes = json.loads(handle.metadata()["shapes"])
    try:
        expected = pruned_layer_names(model, family)
    except ValueError as error:
        raise fail(MANIFEST, f"does not fit this model ({error})") from error
    if sorted(packed) != sorted(expected) or sorted(layer["name"] for layer in layers) != sorted(expected):
        raise fail(MASKS, f"layer names do not match this model: missing {sorted(set(expected) - set(packed))}, "
                          f"unexpected {sorted(set(packed) - set(expected))}")
    with contextlib.ExitStack() as stack:
        values = (stack.enter_context(safe_open(folder / WEIGHTS, framework="pt", device="cpu"))
                  if WEIGHTS in files else None)
        kept_values = set(values.keys()) if values is not None else set()
        for layer in layers:  # every check first (kept weights counted on the packed bits)
            name, weight = layer["name"], model.get_submodule(layer["name"]).weight
            if list(weight.shape) != shapes[name] or layer["shape"] != shapes[name]:
                raise fail(MASKS, f"{name} has shape {shapes[name]} but the model's is {list(weight.shape)}")
            if str(weight.dtype).removeprefix("torch.") != layer["dtype"]:
                raise fail(MANIFEST, f"{name} was pruned in {layer['dtype']} but the model is {weight.dtype}; "
                                     "load the base model in the pruning dtype")
            if packed[name].numel() != (weight.numel() + 7) // 8:
                raise fail(MASKS, f"{name} holds {packed[name].numel()} bytes, expected {(weight.numel() + 7) // 8}")
            if name in kept_values:
                stored = math.prod(values.get_slice(name).get_shape())
                kept = kept_count(packed[name])
                if stored != kept:
                    raise fail(WEIGHTS, f"{name} holds {stored} values for {kept} kept weights")

        def prune(name: str, weight: torch.Tensor) -> None:
            """One layer, in place: memory of its unpacked mask and kept values only."""
            mask = unpack_mask(packed[name], shapes[name]).to(weight.device)
            if name in kept_values:
                weight.zero_()
                weight[mask] = values.get_tensor(name).to(weight.device)
            else:
                weight.masked_fill_(~mask, 0.0)

        yield manifest, prune


def write_pruned_checkpoint(model_dir: str | os.PathLike, dtype: str, artifact_dir: str | os.PathLike,
                            out_dir: str | os.PathLike) -> None:
    """The prepared model at model_dir pruned by the artifact, written to out_dir as a sharded safetensors
    checkpoint (one shard per decoder block, one for the rest) that from_pretrained loads, in the model's dtype.

    It is read and written one block at a time, so host memory holds one block beside the packed masks: this is how
    a pruned model reaches accelerate's disk offload (models.offload.loaded_model) without ever being whole in
    memory. The same checks as apply_artifact run first, on a skeleton of the model on the meta device.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from prunescope.models.prepare import DTYPES
    from prunescope.models.streamed import INDEX, tensor_files

    source, out = Path(model_dir), Path(out_dir)
    files, cast = tensor_files(source), DTYPES[dtype]
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=cast)
    blocks_path = get_family(read_manifest(artifact_dir)["family"]).blocks_path
    shards: dict[str, list[str]] = {}
    for key in files:  # a decoder block's tensors to its own shard, the rest (embeddings, norm, head) to one
        index = key.removeprefix(f"{blocks_path}.").split(".")[0] if key.startswith(f"{blocks_path}.") else ""
        shards.setdefault(f"block-{int(index):05d}" if index else "other", []).append(key)
    with verified_artifact(skeleton, artifact_dir) as (manifest, prune):
        out.mkdir(parents=True, exist_ok=True)  # only once the artifact passed its checks
        pruned = {f"{layer['name']}.weight": layer["name"] for layer in manifest["layers"]}
        for shard, keys in shards.items():
            tensors = {}
            for key in keys:
                with safe_open(files[key], framework="pt", device="cpu") as handle:
                    tensor = handle.get_tensor(key)
                tensors[key] = tensor.to(cast) if tensor.is_floating_point() else tensor
                if key in pruned:
                    prune(pruned[key], tensors[key])
            save_file(tensors, out / f"{shard}.safetensors", metadata={"format": "pt"})
    weight_map = {key: f"{shard}.safetensors" for shard, keys in shards.items() for key in keys}
    (out / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    for name in ("config.json", "generation_config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
