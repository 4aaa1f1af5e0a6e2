"""compressed-tensors' sparse checkpoint format, written and read by the compressed-tensors package itself.

compressed-tensors dropped its sparse compressors after 0.14; 0.14.0.1, the last with them (the version
llm-compressor wrote sparse models with and vLLM read them from), requires transformers < 5. So this file runs in a
venv of its own (`make export FORMAT=compressed-tensors` creates .venv-compressed-tensors) and imports nothing of
prunescope; prunescope.pruning.export calls it as a program:

  write DENSE OUT --structure S --targets T.json   DENSE (a safetensors export, one shard per block) compressed
      shard by shard (memory: one block) with sparse-bitmask, or sparse-24-bitmask for 2:4, on the Linear layers
      named in T.json; config.json gets the quantization_config that ModelCompressor writes; each compressed shard is
      decompressed again and must equal its dense shard bit for bit. Prints one JSON line: the sparsity config and the
      package versions.
  logits CHECKPOINT IDS OUT --reader R   the checkpoint loaded by another reader than prunescope (R: transformers'
      from_pretrained, or compressed-tensors' ModelCompressor.decompress) and the logits of IDS (safetensors, key
      input_ids) saved to OUT (key logits).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
from pathlib import Path

INDEX = "model.safetensors.index.json"


def sparse_format(structure: str) -> str:
    """The compressed-tensors format of a sparsity structure: 2:4 has its own (vLLM's 2:4 kernels read it)."""
    return "sparse-24-bitmask" if structure == "2:4" else "sparse-bitmask"


def write(dense: Path, out: Path, structure: str, targets: list[str]) -> dict:
    """DENSE's shards compressed into the folder OUT, verified by decompression."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig
    from safetensors.torch import load_file, save_file

    config = SparsityCompressionConfig.load_from_registry(sparse_format(structure), targets=sorted(targets),
                                                          sparsity_structure=structure)
    compressor = ModelCompressor(sparsity_config=config)
    out.mkdir(parents=True, exist_ok=True)
    weight_map, found, zeros, total = {}, set(), 0, 0
    for shard in sorted(dense.glob("*.safetensors")):
        tensors = load_file(shard)
        compressed = compressor.sparsity_compressor.compress(tensors, compression_targets=set(targets))
        restored = dict(compressor.sparsity_compressor.decompress_from_state_dict(compressed))
        for key, tensor in tensors.items():
            if not torch.equal(restored[key], tensor):
                raise RuntimeError(f"{shard.name}: {key} does not decompress to the dense tensor")
            if key.removesuffix(".weight") in targets:
                found.add(key.removesuffix(".weight"))
                zeros, total = zeros + int((tensor == 0).sum()), total + tensor.numel()
        save_file(compressed, out / shard.name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(compressed, shard.name))
    if missing := sorted(set(targets) - found):
        raise ValueError(f"{len(missing)} target layers are not in {dense}, e.g. {missing[0]}")
    (out / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    for path in sorted(dense.iterdir()):
        if path.suffix != ".safetensors" and path.name != INDEX:
            shutil.copyfile(path, out / path.name)
    config.global_sparsity = zeros / total
    compressor.update_config(str(out))
    return {"sparsity_config": config.model_dump(),
            "versions": {name: importlib.metadata.version(name) for name in ("compressed-tensors", "transformers")}}


def load(checkpoint: Path, reader: str):
    """The checkpoint as a dense model, decompressed by `reader`: transformers' from_pretrained (its compressed-tensors
    integration; it fails on sparse-bitmask in transformers 4.57, whose loader compresses a meta-device model first,
    which BitmaskTensor cannot), or compressed-tensors' own ModelCompressor.decompress into a model built from the
    config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if reader == "transformers":
        return AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    from compressed_tensors.compressors import ModelCompressor

    config = AutoConfig.from_pretrained(checkpoint)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
    ModelCompressor.from_pretrained(str(checkpoint)).decompress(model_path=str(checkpoint), model=model)
    model.tie_weights()  # decompress sets new parameters: a tied head would keep its random init
    return model


def logits(checkpoint: Path, reader: str, ids_file: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    model = load(checkpoint, reader).eval()
    with torch.no_grad():
        result = model(load_file(ids_file)["input_ids"]).logits
    save_file({"logits": result.contiguous()}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("write")
    writer.add_argument("dense", type=Path)
    writer.add_argument("out", type=Path)
    writer.add_argument("--structure", required=True, help="unstructured, or N:M such as 2:4")
    writer.add_argument("--targets", type=Path, required=True, help="JSON list of the pruned Linear layers' names")
    scorer = commands.add_parser("logits")
    scorer.add_argument("checkpoint", type=Path)
    scorer.add_argument("ids", type=Path)
    scorer.add_argument("out", type=Path)
    scorer.add_argument("--reader", choices=("transformers", "compressed-tensors"), default="transformers")
    args = parser.parse_args()
    if args.command == "write":
        print(json.dumps(write(args.dense, args.out, args.structure, json.loads(args.targets.read_text()))))
    else:
        logits(args.checkpoint, args.reader, args.ids, args.out)


if __name__ == "__main__":
    main()
