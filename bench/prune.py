"""Wall time and peak memory of pruning per method: the batched driver against a per-sample loop of the same code.

The per-sample loop is prune_model with calibration batch_size=1, the way the reference implementations feed
their samples; nothing else differs, so the masks must be identical (checked and reported). Each run prunes a
fresh copy of the model at 0.5 unstructured with the method's default options. Writes <out>/prune.csv and
<out>/prune.md.

  python bench/prune.py --model-dir data/models/smollm2-135m \
      --calibration data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors --threads 2
  python bench/prune.py --random-config llama-7b --nsamples 128 --seqlen 2048   # GPU: random weights, 7B shapes
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig

from prunescope.calibration.sample import load_calibration
from prunescope.io import atomic_path
from prunescope.models.prepare import load_model
from prunescope.pruning import prune_model

METHODS = ("magnitude", "wanda", "sparsegpt", "ria")
SPARSITY, STRUCTURE = 0.5, "unstructured"
RANDOM_CONFIGS = {
    "llama-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "llama-tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300},
}
COLUMNS = ["method", "device", "model", "nsamples", "seqlen", "batch_size", "seconds", "peak_memory_bytes",
           "masks_identical", "speedup"]


def random_model(name: str, layers: int | None, device: torch.device) -> nn.Module:
    """Random-init LLaMA of the named shapes, built on `device` (fast on a GPU; fp16 there) and kept on the CPU,
    since the driver moves one block at a time to the device."""
    config = LlamaConfig(**RANDOM_CONFIGS[name], max_position_embeddings=4096)
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


def reset_peak_memory() -> None:
    """Lower the process's peak RSS to its current RSS (Linux), so each CPU run reports its own peak."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def timed_run(model: nn.Module, method: str, calibration: torch.Tensor, batch_size: int,
              device: torch.device) -> tuple[float, int, dict[str, torch.Tensor], str]:
    """Prune a fresh copy: seconds, peak memory, masks and the driver's note on how memory was measured."""
    fresh = copy.deepcopy(model)
    gc.collect()
    if device.type == "cpu":
        reset_peak_memory()
    result = prune_model(fresh, model.config.model_type, method, SPARSITY, STRUCTURE, calibration, batch_size,
                         device, {})
    return result.seconds, result.peak_memory_bytes, result.masks, result.notes[-1]


def write_reports(rows: list[dict], out_dir: Path, header: list[str]) -> None:
    """prune.csv (one row per run) and prune.md (one line per method: per-sample vs batched)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "prune.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    batched = rows[0]["batch_size"]  # rows come in pairs: batched, then per-sample
    lines = [*header, "",
             f"| method | seconds, B=1 | seconds, B={batched} | speedup | peak MiB, B=1 | peak MiB, B={batched} "
             "| masks identical |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for fast, slow in zip(rows[::2], rows[1::2], strict=True):
        lines.append(f"| {fast['method']} | {slow['seconds']:.2f} | {fast['seconds']:.2f} | {fast['speedup']:.2f}x "
                     f"| {slow['peak_memory_bytes'] / 2**20:,.0f} | {fast['peak_memory_bytes'] / 2**20:,.0f} "
                     f"| {'yes' if fast['masks_identical'] else 'NO'} |")
    with atomic_path(out_dir / "prune.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


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
    load_before, rows = os.getloadavg()[0], []
    for method in METHODS:
        fast, fast_peak, fast_masks, note = timed_run(model, method, calibration, args.batch_size, device)
        slow, slow_peak, slow_masks, _ = timed_run(model, method, calibration, 1, device)
        identical = fast_masks.keys() == slow_masks.keys() and all(
            torch.equal(mask, slow_masks[layer]) for layer, mask in fast_masks.items())
        del fast_masks, slow_masks  # not held through the next method's runs and their memory peaks
        common = {"method": method, "device": device_name(device), "model": name, "nsamples": args.nsamples,
                  "seqlen": args.seqlen, "masks_identical": identical}
        rows += [{**common, "batch_size": args.batch_size, "seconds": round(fast, 3), "peak_memory_bytes": fast_peak,
                  "speedup": round(slow / fast, 3)},
                 {**common, "batch_size": 1, "seconds": round(slow, 3), "peak_memory_bytes": slow_peak, "speedup": 1.0}]
        print(f"{method}: B={args.batch_size} {fast:.1f} s, B=1 {slow:.1f} s, masks identical: {identical}", flush=True)
    source = args.calibration or "seeded random ids"
    write_reports(rows, args.out, [
        "# Pruning time and memory: batched driver vs per-sample loop",
        "",
        f"{name} on {device_name(device)}; calibration {args.nsamples} x {args.seqlen} from {source}; "
        f"sparsity {SPARSITY} {STRUCTURE}; 1-min load average before the runs {load_before:.2f}.",
        f"Speedup = seconds at B=1 / seconds at B={args.batch_size}; peak memory = {note.split(': ', 1)[1]}.",
    ])


if __name__ == "__main__":
    main()
