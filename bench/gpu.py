"""Prune and evaluate at the 7B width on one GPU: wall time, peak GPU memory and peak host RSS per stage, against
the performance aims (Wanda within 3x of two dense forward passes, about 30 s for a 7B model on an H100-class GPU;
SparseGPT under 2 minutes; 128 x 2048 calibration).

A random-init LLaMA of the named shapes (llama-7b: hidden 4096, MLP 11008, 32 heads, vocab 32000), fp16 on a GPU,
cut to --blocks of its blocks so that the run fits a few minutes. Stages, each timed alone:
  dense_forward_x2    two dense forward passes of those blocks over the calibration, the model on the device: the
                      baseline of the Wanda aim (Wanda runs each block twice, dense for statistics, then pruned)
  write_checkpoint    the model saved as a safetensors checkpoint (the prune rule reads one)
  <method>_prune      prune_model at 0.5 unstructured (Wanda, SparseGPT) as the prune rule runs it: the embeddings and
                      then one block at a time read from the checkpoint onto the device (models/streamed.py)
  <method>_save       save_artifact of that result
  <method>_apply      apply_artifact onto a fresh copy of the dense model (its weights then checked: the pruned ones)
  score_packed        the evaluate scorer (SharedContextLM) on --requests multiple-choice requests, model on device
  score_lm_eval       lm-eval's HFLM on the same requests (the answers are compared)
Every block has the same shapes and sees the same calibration tokens, so the full model's seconds are the
measured ones times (full blocks / blocks), marked extrapolated (slightly high for pruning, whose one embedding pass
is scaled too). Peak GPU memory is per stage (torch.cuda.max_memory_allocated); peak host RSS is the process's
VmHWM, reset before each stage where the kernel allows it. Writes <out>/gpu.csv, gpu.md and gpu.json.

  python bench/gpu.py                     # on a GPU: llama-7b, 4 blocks, 128 x 2048, 400 requests
  python bench/gpu.py --device cpu --config llama-tiny --blocks 2 --nsamples 4 --seqlen 32 --requests 24
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import importlib.metadata
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402
from peak_memory import peak_rss_bytes, reset_peak_memory  # noqa: E402
from prune import RANDOM_CONFIGS, calibration_ids, device_name, random_model  # noqa: E402

from prunescope.io import write_json  # noqa: E402
from prunescope.models.streamed import CheckpointBlocks  # noqa: E402
from prunescope.pruning import METHODS, PruneOptions, apply_artifact, prune_model, save_artifact  # noqa: E402

COLUMNS = ["stage", "seconds", "full_model_seconds", "peak_gpu_bytes", "peak_rss_bytes", "note"]
SCALED_STAGES = ("dense_forward_x2", "_prune", "_save", "_apply")  # stages whose work is per block


class Stages:
    """Times stages one after another and keeps one row per stage, with the full-model extrapolation."""

    def __init__(self, device: torch.device, blocks: int, full_blocks: int):
        self.device, self.scale, self.rows = device, full_blocks / blocks, []
        try:
            reset_peak_memory()
            self.rss_note = "Peak host RSS per stage (VmHWM reset before each)"
        except OSError:
            self.rss_note = "Peak host RSS of the process so far (this kernel cannot reset VmHWM)"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        """Time the block's work (device work finished) and record its peaks; the yielded dict takes a note."""
        with contextlib.suppress(OSError):
            reset_peak_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        extra = {"note": ""}
        start = time.perf_counter()
        yield extra
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        scaled = any(name.endswith(suffix) for suffix in SCALED_STAGES)
        self.rows.append({
            "stage": name, "seconds": round(seconds, 3), "full_model_seconds": round(seconds * self.scale, 2)
            if scaled else "", "peak_gpu_bytes": torch.cuda.max_memory_allocated(self.device)
            if self.device.type == "cuda" else "", "peak_rss_bytes": peak_rss_bytes(), "note": extra["note"]})
        print(f"{name}: {seconds:.2f} s {extra['note']}", flush=True)


@torch.no_grad()
def dense_forwards(model: nn.Module, calibration: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """Two passes of the decoder (no output head, as the driver runs none) over the calibration, batch by batch."""
    for _ in range(2):
        for batch in calibration.split(batch_size):
            model.base_model(input_ids=batch.to(device), use_cache=False)


def multiple_choice_requests(vocab_size: int, count: int, seed: int = 0) -> list:
    """lm-eval token-level requests: contexts of 64 to 512 tokens, four continuations of 1 to 8 tokens each."""
    rng = random.Random(seed)
    requests = []
    while len(requests) < count:
        context = [rng.randrange(vocab_size) for _ in range(rng.randint(64, 512))]
        requests += [(("", ""), context, [rng.randrange(vocab_size) for _ in range(rng.randint(1, 8))])
                     for _ in range(4)]
    return requests[:count]


def word_tokenizer(vocab_size: int):
    """A tokenizer of exactly vocab_size tokens: the scorers read only its pad id and vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({f"t{index}": index for index in range(vocab_size)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", eos_token="t1")


def prune_stages(stages: Stages, model: nn.Module, checkpoint_dir: Path, method: str, calibration: torch.Tensor,
                 batch_size: int, scratch: Path) -> None:
    """The prune rule's path (workflow/scripts/prune.py): blocks read from the checkpoint one at a time, the artifact
    saved; then the artifact applied to a fresh copy of the dense model, whose weights must be the pruned ones."""
    gc.collect()  # the previous method's copies, before this one's memory is measured
    keep_pruned = METHODS[method].UPDATES_WEIGHTS
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    (scratch / f"{method}-blocks").mkdir()
    with stages.stage(f"{method}_prune") as record:
        checkpoint = CheckpointBlocks(checkpoint_dir, dtype, "llama", scratch / f"{method}-blocks")
        result = prune_model(checkpoint.model, "llama", PruneOptions(method, 0.5, batch_size=batch_size), calibration,
                             stages.device, residence=lambda index, block, on: checkpoint.resident(
                                 index, block, on, keep_pruned))
        record["note"] = f"driver's own seconds {result.seconds:.2f}"
    with stages.stage(f"{method}_save"):
        save_artifact(result, checkpoint.pruned_weight, scratch / method, {"base_model": "random"})
    applied = copy.deepcopy(model)
    with stages.stage(f"{method}_apply"):
        apply_artifact(applied, scratch / method)
    pruned = checkpoint.pruned_weight if keep_pruned else (
        lambda name: model.get_submodule(name).weight.masked_fill(~result.mask(name), 0.0))
    equal = all(torch.equal(applied.get_submodule(name).weight, pruned(name)) for name in result.masks)
    stages.rows[-1]["note"] = "applied model has the pruned weights" if equal else "APPLIED WEIGHTS DIFFER"


def score_stages(stages: Stages, model: nn.Module, requests: list, batch_size: int) -> None:
    """Our packed scorer and lm-eval's HFLM on the same requests, the model on the device; answers compared."""
    from lm_eval.models.huggingface import HFLM

    from prunescope.evaluation.scoring import SharedContextLM

    tokenizer = word_tokenizer(model.config.vocab_size)
    answers = {}
    for stage, scorer in (("score_packed", SharedContextLM), ("score_lm_eval", HFLM)):
        lm = scorer(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        with stages.stage(stage) as record:
            answers[stage] = lm._loglikelihood_tokens(requests, disable_tqdm=True)
            record["note"] = f"{len(requests)} requests, attention {model.config._attn_implementation}"
    ours, theirs = answers["score_packed"], answers["score_lm_eval"]
    largest = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs, strict=True))
    flips = sum(a[1] != b[1] for a, b in zip(ours, theirs, strict=True))
    stages.rows[-1]["note"] += f"; vs packed: largest log-prob difference {largest:.2e}, {flips} is-greedy flips"


def environment(device: torch.device) -> dict:
    """What the figures depend on: the device, the library versions, the host."""
    info = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "python": platform.python_version(),
            **{name: importlib.metadata.version(name) for name in ("transformers", "lm_eval")}}
    if device.type == "cuda":
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


def aims(stages: Stages, full_blocks: int) -> list[dict]:
    """Each performance aim with its figure, None while its stages have not run."""
    rows = {row["stage"]: row for row in stages.rows}
    wanda, dense = (rows[stage]["seconds"] if stage in rows else None for stage in ("wanda_prune", "dense_forward_x2"))
    return [
        {"aim": "wanda_vs_dense_x2", "target": 3.0, "measured": round(wanda / dense, 2) if wanda and dense else None,
         "label": "Wanda prune / two dense forward passes (same blocks, measured)"},
        {"aim": "wanda_seconds", "target": 30.0, "label": f"Wanda, {full_blocks} blocks (extrapolated), seconds; "
         "about 30 on an H100-class GPU", "measured": rows.get("wanda_prune", {}).get("full_model_seconds")},
        {"aim": "sparsegpt_seconds", "target": 120.0, "label": f"SparseGPT, {full_blocks} blocks (extrapolated), "
         "seconds", "measured": rows.get("sparsegpt_prune", {}).get("full_model_seconds")},
    ]


def write_reports(stages: Stages, info: dict, settings: dict, out_dir: Path) -> None:
    """gpu.csv (one row per stage), gpu.json (the same with environment, settings and aims) and gpu.md."""
    full, blocks = settings["full_blocks"], settings["blocks"]
    lines = ["# Prune and evaluate at the 7B width on one device", "",
             f"{settings['model']} with {blocks} of its {full} blocks, {settings['dtype']}, on {info['device']} "
             f"(torch {info['torch']}, CUDA {info['cuda']}, transformers {info['transformers']}, lm_eval "
             f"{info['lm_eval']}); calibration {settings['nsamples']} x {settings['seqlen']} seeded random ids, batch "
             f"{settings['batch_size']}; sparsity 0.5 unstructured. Full-model seconds are EXTRAPOLATED: measured x "
             f"{full}/{blocks}. {stages.rss_note}.", "",
             "| stage | seconds | full model, extrapolated | peak GPU GiB | peak host RSS GiB | note |",
             "|---|---:|---:|---:|---:|---|"]
    for row in stages.rows:
        gpu = f"{row['peak_gpu_bytes'] / 2**30:.2f}" if row["peak_gpu_bytes"] != "" else "--"
        full_model = "--" if row["full_model_seconds"] == "" else row["full_model_seconds"]
        lines.append(f"| {row['stage']} | {row['seconds']:.2f} | {full_model} | {gpu} "
                     f"| {row['peak_rss_bytes'] / 2**30:.2f} | {row['note']} |")
    measured = aims(stages, full)
    lines += ["", "| aim | target | measured | met |", "|---|---:|---:|---|"]
    for aim in measured:
        figure, met = ("--", "not measured") if aim["measured"] is None else (
            aim["measured"], "yes" if aim["measured"] <= aim["target"] else "no")
        lines.append(f"| {aim['label']} | <= {aim['target']:g} | {figure} | {met} |")
    write_outputs(out_dir, "gpu", COLUMNS, stages.rows, lines)
    write_json(out_dir / "gpu.json", {"environment": info, "settings": settings, "stages": stages.rows,
                                      "aims": {aim["aim"]: {"target": aim["target"], "measured": aim["measured"]}
                                               for aim in measured}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=sorted(RANDOM_CONFIGS), default="llama-7b", help="random-init shapes")
    parser.add_argument("--blocks", type=int, default=4, help="decoder blocks actually built and run")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8, help="calibration batch (driver and dense passes)")
    parser.add_argument("--methods", nargs="+", choices=("wanda", "sparsegpt"), default=["wanda", "sparsegpt"])
    parser.add_argument("--requests", type=int, default=400, help="multiple-choice requests for the scorers")
    parser.add_argument("--score-batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    full_blocks = RANDOM_CONFIGS[args.config]["num_hidden_layers"]
    if not 0 < args.blocks <= full_blocks:
        raise SystemExit(f"--blocks must be in 1..{full_blocks} for {args.config}, got {args.blocks}")
    stages = Stages(device, args.blocks, full_blocks)
    torch.manual_seed(0)
    with stages.stage("build_model"):
        model = random_model(args.config, args.blocks, device)
    settings = {"model": f"random {args.config}", "blocks": args.blocks, "full_blocks": full_blocks,
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "nsamples": args.nsamples,
                "seqlen": args.seqlen, "batch_size": args.batch_size, "requests": args.requests}
    report = functools.partial(write_reports, stages, environment(device), settings, args.out)  # after each step:
    calibration = calibration_ids(None, model.config.vocab_size, args.nsamples, args.seqlen)  # a run cut short
    model.to(device)  # by a time limit leaves what it measured
    with stages.stage("dense_forward_x2"):
        dense_forwards(model, calibration, args.batch_size, device)
    model.to("cpu")
    report()
    with tempfile.TemporaryDirectory() as scratch:
        with stages.stage("write_checkpoint"):
            model.save_pretrained(Path(scratch) / "checkpoint")
        for method in args.methods:
            prune_stages(stages, model, Path(scratch) / "checkpoint", method, calibration, args.batch_size,
                         Path(scratch))
            report()
    model.to(device)
    score_stages(stages, model, multiple_choice_requests(model.config.vocab_size, args.requests),
                 args.score_batch_size)
    report()

if __name__ == "__main__":
    main()
