"""Peak host memory of the prune rule's path and the evaluate rule's loading, measured in a process of its own.

Run by tests/test_memory.py, one fresh process per model and method, as each Snakemake job is a process of its own:

  python tests/memory_probe.py write DIR --hidden 4096 --intermediate 11008 --heads 32 --vocab 32000 --blocks 2
  python tests/memory_probe.py measure DIR --method wanda --nsamples 4 --seqlen 128 --batch-size 8

`write` saves a random-init LLaMA checkpoint (float16) to DIR. `measure` prunes it on the CPU exactly as
workflow/scripts/prune.py does (CheckpointBlocks: the embeddings, then one block at a time read from the
checkpoint; prune_model; save_artifact), then loads the model as the evaluate rule does (load_model's
from_pretrained) and applies the artifact (apply_artifact). It prints one JSON line: the peak resident set
(VmHWM, reset through /proc/self/clear_refs before each stage) of the prune stage and of the apply stage, and the
resident set after the imports and before each stage.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from prunescope.models.prepare import DTYPES
from prunescope.models.streamed import CheckpointBlocks
from prunescope.pruning import METHODS, PruneOptions, apply_artifact, prune_model, save_artifact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from peak_memory import reset_peak_memory, status_bytes  # noqa: E402


def write_checkpoint(folder: Path, args: argparse.Namespace) -> None:
    """A random-init LLaMA of the given widths, float16, saved as the prepare_model rule leaves a model."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.blocks,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads, vocab_size=args.vocab,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float16).save_pretrained(folder)


def prune_stage(folder: Path, method: str, artifact: Path, scratch: Path, args: argparse.Namespace) -> None:
    """workflow/scripts/prune.py on the CPU: the checkpoint streamed block by block, pruned at 0.5, saved."""
    calibration = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    checkpoint = CheckpointBlocks(folder, "float16", "llama", scratch)
    keep_pruned = METHODS[method].UPDATES_WEIGHTS
    result = prune_model(checkpoint.model, "llama", PruneOptions(method, 0.5, batch_size=args.batch_size),
                         calibration if METHODS[method].CALIBRATED else None, torch.device("cpu"),
                         residence=lambda index, block, on: checkpoint.resident(index, block, on, keep_pruned))
    save_artifact(result, checkpoint.pruned_weight, artifact, {"model": "random"})


def apply_stage(folder: Path, artifact: Path) -> None:
    """The evaluate rule's loading on the CPU: load_model's from_pretrained (a random checkpoint has no tokenizer
    for load_model to read), then apply_artifact."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES["float16"]).to("cpu").eval()
    apply_artifact(model, artifact)


def measure(folder: Path, args: argparse.Namespace) -> dict:
    """Peak RSS of the prune stage and of the apply stage, and the resident set before each."""
    record = {"method": args.method, "imported_rss": status_bytes("VmRSS")}
    with tempfile.TemporaryDirectory() as work:
        scratch, artifact = Path(work) / "scratch", Path(work) / "artifact"
        scratch.mkdir()
        gc.collect()
        reset_peak_memory()
        record["before_prune_rss"] = status_bytes("VmRSS")
        prune_stage(folder, args.method, artifact, scratch, args)
        record["prune_peak"] = status_bytes("VmHWM")
        gc.collect()
        reset_peak_memory()
        record["before_apply_rss"] = status_bytes("VmRSS")
        apply_stage(folder, artifact)
        record["apply_peak"] = status_bytes("VmHWM")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("write", "measure"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--method", choices=sorted(METHODS), default="wanda")
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "write":
        write_checkpoint(args.folder, args)
    else:
        print(json.dumps(measure(args.folder, args)), flush=True)


if __name__ == "__main__":
    main()
