"""Pruning cost per method and pattern, and the batched driver against a per-sample loop of the same code.

Every method prunes a fresh copy of the model at sparsity 0.5, unstructured, 2:4 and 4:8, with its default options:
wall time, time per block, peak memory and the bytes of the artifact it saves, against an fp16 checkpoint.
The per-sample loop is prune_model with calibration batch_size=1, the way the reference implementations feed
their samples (calibrated methods, unstructured); nothing else differs, so the masks must be identical (checked
and reported). Magnitude runs data-free, as in the workflow. Writes <out>/prune.csv and <out>/prune.md.

  python bench/prune.py --model-dir data/models/smollm2-135m \
      --calibration data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors --threads 2
  python bench/prune.py --random-config llama-7b --nsamples 128 --seqlen 2048   # GPU: random weights, 7B shapes
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402
from peak_memory import reset_peak_memory  # noqa: E402
from storage import artifact_bytes  # noqa: E402

from prunescope.calibration.sample import load_calibration  # noqa: E402
from prunescope.models.prepare import load_model  # noqa: E402
from prunescope.pruning import METHODS as REGISTRY  # noqa: E402
from prunescope.pruning import PruneOptions, model_weights, prune_model, save_artifact  # noqa: E402

METHODS = tuple(REGISTRY)
SPARSITY, STRUCTURES = 0.5, ("unstructured", "2:4", "4:8")
RANDOM_CONFIGS = {
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "llama-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "llama-tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300},
}
COLUMNS = ["method", "structure", "device", "model", "nsamples", "seqlen", "batch_size", "seconds",
           "seconds_per_block", "peak_memory_bytes", "artifact_bytes", "ratio_to_fp16", "masks_identical", "speedup"]


def random_model(name: str, layers: int | None, device: torch.device, vocab_size: int | None = None) -> nn.Module:
    """Random-init LLaMA of the named shapes (vocab_size: to match a tokenizer), built on `device` (fast on a GPU;
    fp16 there) and kept on the CPU, since the driver moves one block at a time to the device."""
    config = LlamaConfig(**{**RANDOM_CONFIGS[name], **({"vocab_size": vocab_size} if vocab_size else {})},
                         max_position_embeddings=4096)
    config.num_hidden_layers = layers or config.num_hidden_layers
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to("cpu").eval()


def calibration_ids(path: str | None, vocab_size: int, nsamples: int, seqlen: int) -> torch.Tensor:
    """The first nsamples x seqlen of a saved calibration file, or seeded random ids (timing ignores the text)."""
    if path is None:
        return torch.randint(0, vocab_size, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    ids = load_calibration(path)
    if ids.shape[0] < nsamples or ids.shape[1] < seqlen:
        raise ValueError(f"{path} holds {tuple(ids.shape)} ids, fewer than --nsamples {nsamples} x --seqlen {seqlen}")
    return ids[:nsamples, :seqlen]


def device_name(device: torch.device) -> str:
    """GPU model, or CPU model and thread count: timings only compare on the same hardware."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else 'cpu'} ({torch.get_num_threads()} threads)"


def timed_run(model: nn.Module, method: str, structure: str, calibration: torch.Tensor, batch_size: int,
              device: torch.device):
    """Prune a fresh copy (calibration only for calibrated methods): the driver's PruneResult and the pruned copy."""
    fresh = copy.deepcopy(model)
    gc.collect()
    if device.type == "cpu":
        reset_peak_memory()
    return prune_model(fresh, model.config.model_type, PruneOptions(method, SPARSITY, structure, batch_size=batch_size),
                       calibration if REGISTRY[method].CALIBRATED else None, device), fresh


def saved_bytes(result, pruned: nn.Module) -> int:
    """Bytes of the artifact the workflow would save for this result."""
    with tempfile.TemporaryDirectory() as scratch:
        save_artifact(result, model_weights(pruned), Path(scratch) / "artifact", {})
        return artifact_bytes(Path(scratch) / "artifact")["total_bytes"]


def measure(model: nn.Module, name: str, calibration: torch.Tensor, batch_size: int, device: torch.device) -> list:
    """One row per (method, pattern) at `batch_size`, then one per calibrated method at batch size 1."""
    fp16_bytes = 2 * sum(parameter.numel() for parameter in model.parameters())
    blocks = model.config.num_hidden_layers
    common = {"device": device_name(device), "model": name, "nsamples": calibration.shape[0],
              "seqlen": calibration.shape[1]}
    rows, batched_masks = [], {}
    for method in METHODS:
        for structure in STRUCTURES:
            result, pruned = timed_run(model, method, structure, calibration, batch_size, device)
            size = saved_bytes(result, pruned)
            rows.append({**common, "method": method, "structure": structure, "batch_size": batch_size,
                         "seconds": round(result.seconds, 3), "seconds_per_block": round(result.seconds / blocks, 4),
                         "peak_memory_bytes": result.peak_memory_bytes, "artifact_bytes": size,
                         "ratio_to_fp16": round(size / fp16_bytes, 5), "masks_identical": "", "speedup": ""})
            if structure == "unstructured":
                batched_masks[method] = (result.masks, result.seconds)
            print(f"{method} {structure}: {result.seconds:.1f} s", flush=True)
    for method in METHODS:
        if not REGISTRY[method].CALIBRATED:
            continue
        result, _ = timed_run(model, method, "unstructured", calibration, 1, device)
        masks, fast = batched_masks.pop(method)
        identical = masks.keys() == result.masks.keys() and all(
            torch.equal(mask, result.masks[layer]) for layer, mask in masks.items())
        rows.append({**common, "method": method, "structure": "unstructured", "batch_size": 1,
                     "seconds": round(result.seconds, 3), "seconds_per_block": round(result.seconds / blocks, 4),
                     "peak_memory_bytes": result.peak_memory_bytes, "artifact_bytes": "", "ratio_to_fp16": "",
                     "masks_identical": identical, "speedup": round(result.seconds / fast, 3)})
        print(f"{method} per-sample: {result.seconds:.1f} s, masks identical: {identical}", flush=True)
    return rows, result.notes[-1]


def write_reports(rows: list[dict], out_dir: Path, header: list[str]) -> None:
    """prune.csv (one row per run) and prune.md (cost per method and pattern; per-sample vs batched)."""
    batched = [row for row in rows if row["artifact_bytes"] != ""]
    per_sample = [row for row in rows if row["artifact_bytes"] == ""]
    size = batched[0]["batch_size"]
    lines = [*header, "",
             "| method | pattern | seconds | seconds per block | peak MiB | artifact MiB | artifact / fp16 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['method']} | {row['structure']} | {row['seconds']:.2f} | {row['seconds_per_block']:.3f} "
              f"| {row['peak_memory_bytes'] / 2**20:,.0f} | {row['artifact_bytes'] / 2**20:.2f} "
              f"| 1/{1 / row['ratio_to_fp16']:.1f} |" for row in batched]
    lines += ["", f"Batched driver (B={size}) vs per-sample loop (B=1), unstructured; speedup = seconds at B=1 / "
              f"seconds at B={size}.", "",
              f"| method | seconds, B=1 | seconds, B={size} | speedup | peak MiB, B=1 | masks identical |",
              "|---|---:|---:|---:|---:|---|"]
    fast = {row["method"]: row for row in batched if row["structure"] == "unstructured"}
    lines += [f"| {row['method']} | {row['seconds']:.2f} | {fast[row['method']]['seconds']:.2f} "
              f"| {row['speedup']:.2f}x | {row['peak_memory_bytes'] / 2**20:,.0f} "
              f"| {'yes' if row['masks_identical'] else 'NO'} |"
              for row in per_sample]
    write_outputs(out_dir, "prune", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a prepared safetensors model folder (loaded in float32)")
    source.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS), help="random weights of these shapes")
    parser.add_argument("--layers", type=int, help="shrink the random model to this many blocks (CPU testing)")
    parser.add_argument("--calibration", help="a saved calibration .safetensors (default: seeded random ids)")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="the batched driver's calibration batch")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model_dir:
        model, name = load_model(args.model_dir, "float32", torch.device("cpu"))[0], Path(args.model_dir).name
    else:
        model = random_model(args.random_config, args.layers, device)
        name = f"random {args.random_config}" + (f" ({args.layers} layers)" if args.layers else "")
    calibration = calibration_ids(args.calibration, model.config.vocab_size, args.nsamples, args.seqlen)
    load_before = os.getloadavg()[0]
    rows, note = measure(model, name, calibration, args.batch_size, device)
    source = args.calibration or "seeded random ids"
    write_reports(rows, args.out, [
        "# Pruning cost per method and pattern; batched driver vs per-sample loop",
        "",
        f"{name} on {device_name(device)}; calibration {args.nsamples} x {args.seqlen} from {source} (magnitude: "
        f"none); sparsity {SPARSITY}; 1-min load average before the runs {load_before:.2f}. Peak memory = "
        f"{note.split(': ', 1)[1]}; fp16 = every parameter at 2 bytes.",
    ])


if __name__ == "__main__":
    main()
