"""llm-compressor's own one-shot Wanda or SparseGPT on a prepared model, for bench/llmcompressor_side_by_side.py.

Runs in llm-compressor's venv (it pins another transformers than prunescope), so it imports nothing of
prunescope: it reads the model folder and the calibration tensor prunescope sampled, runs `llmcompressor.oneshot`
with WandaPruningModifier or SparseGPTModifier at the references' defaults (unstructured, every Linear of the
decoder blocks, lm_head left alone), and writes the pruned decoder-block Linear weights to OUT/weights.safetensors
and one JSON line: wall seconds of oneshot, peak RSS, versions.

  .venv-llmcompressor/bin/python bench/llmcompressor_peer.py MODEL_DIR CALIBRATION.safetensors wanda OUT --sparsity 0.5
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from peak_memory import peak_rss_bytes  # bench/, this script's folder
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def modifier(method: str, sparsity: float):
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    options = {"sparsity": sparsity, "mask_structure": "0:0", "targets": ["Linear"], "ignore": ["lm_head"]}
    if method == "sparsegpt":
        return SparseGPTModifier(**options, block_size=128, dampening_frac=0.01)
    return WandaPruningModifier(**options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("calibration", type=Path, help="prunescope's calibration safetensors (key input_ids)")
    parser.add_argument("method", choices=("wanda", "sparsegpt"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from llmcompressor import oneshot

    torch.set_num_threads(args.threads)
    ids = load_file(args.calibration)["input_ids"]
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    start = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=modifier(args.method, args.sparsity),
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    seconds = time.perf_counter() - start
    weights = {f"{name}.weight": module.weight.detach().contiguous() for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(weights, args.out / "weights.safetensors")
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak_rss_bytes(), "layers": len(weights),
                      "versions": {name: importlib.metadata.version(name)
                                   for name in ("llmcompressor", "transformers", "torch")}}), flush=True)


if __name__ == "__main__":
    main()
