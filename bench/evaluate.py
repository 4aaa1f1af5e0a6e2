"""Evaluation speed per dataset: our scorer against stock lm-eval and against the forward-pass limit, side by side.

For each task folder, on one loaded model and in one process:
  ours   the workflow's evaluate_model (SharedContextLM: each context packed once with its continuations, the
         output head only where read)
  stock  the same lm-eval run with lm-eval's own HFLM (one forward of context + continuation per choice,
         log-softmax over the vocabulary at every position), which is what the lm-eval CLI runs
  limit  a bare batched forward of the decoder (no output head, no cache) over the tokens that must be
         encoded: each distinct context once, followed by its continuations' tokens but their last
The two scorers must give the same per-example scores (checked, reported). Then whole jobs in fresh processes:
the plain `lm_eval run` CLI on all task folders vs our evaluate_tasks on them, imports and model load included.
Writes <out>/evaluate.csv and <out>/evaluate.md.

  python bench/evaluate.py --model-dir data/models/smollm2-135m --tasks-dir results/tasks --threads 2
  python bench/evaluate.py --random-config llama-7b --device cuda   # GPU: random weights, 7B shapes (no CLI run)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402
from prune import RANDOM_CONFIGS, device_name, random_model  # noqa: E402

from prunescope.evaluation.harness import SEED, evaluate_model, evaluate_tasks, load_task_config  # noqa: E402
from prunescope.evaluation.scoring import PADDING, SharedContextLM, left_pad, pack_by_context  # noqa: E402
from prunescope.models.prepare import load_model  # noqa: E402

COLUMNS = ["dataset", "model", "device", "examples", "requests", "contexts", "tokens_stock", "tokens_needed",
           "seconds_stock", "seconds_ours", "seconds_limit", "examples_per_s_stock", "examples_per_s_ours",
           "speedup_vs_stock", "share_of_limit", "same_scores", "peak_gpu_memory_bytes"]


class RecordingLM(SharedContextLM):
    """Our scorer, keeping the token-level requests lm-eval handed it (for the forward-limit run)."""

    requests: list = []

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
        RecordingLM.requests = list(requests)
        return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)


@torch.no_grad()
def forward_limit(model, requests: list, batch_size: int, pad_id: int) -> tuple[float, int]:
    """Seconds of a bare decoder forward (padding mask only) over the tokens our scorer encodes: each distinct
    context followed by its continuations but their last token; and their count."""
    rows = sorted(pack_by_context(requests)[1].values(), key=lambda packed: -len(packed.tokens))
    start = time.perf_counter()
    for first in range(0, len(rows), batch_size):
        ids, positions, segments = left_pad(rows[first:first + batch_size], pad_id, model.device)
        model.base_model(input_ids=ids, attention_mask=(segments != PADDING).long(), position_ids=positions)
    return time.perf_counter() - start, sum(len(packed.tokens) for packed in rows)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def per_dataset(model, tokenizer, tasks_dir: Path, datasets: list[str], batch_size: int, device: torch.device,
                label: str) -> list[dict]:
    from lm_eval.models.huggingface import HFLM

    rows = []
    for dataset in datasets:
        task_dir, name = tasks_dir / dataset, f"prunescope_{dataset}"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ours_s, ours = timed(evaluate_model, model, tokenizer, task_dir, name, batch_size, 0, str(device), RecordingLM)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else ""
        stock_s, stock = timed(evaluate_model, model, tokenizer, task_dir, name, batch_size, 0, str(device), HFLM)
        requests = RecordingLM.requests
        limit_s, needed = forward_limit(model, requests, batch_size, tokenizer.pad_token_id or 0)
        # stock lm-eval encodes context + continuation[:-1] once per distinct such sequence
        stock_inputs = {tuple(context + continuation[:-1]) for _, context, continuation in requests}
        n = ours["n"]
        rows.append({
            "dataset": dataset, "model": label, "device": device_name(device), "examples": n, "requests": len(requests),
            "contexts": len({tuple(context) for _, context, _ in requests}),
            "tokens_stock": sum(map(len, stock_inputs)), "tokens_needed": needed,
            "seconds_stock": round(stock_s, 3), "seconds_ours": round(ours_s, 3),
            "seconds_limit": round(limit_s, 3), "examples_per_s_stock": round(n / stock_s, 2),
            "examples_per_s_ours": round(n / ours_s, 2), "speedup_vs_stock": round(stock_s / ours_s, 3),
            "share_of_limit": round(limit_s / ours_s, 3), "same_scores": ours["per_example"] == stock["per_example"],
            "peak_gpu_memory_bytes": peak,
        })
        print(f"{dataset}: ours {ours_s:.1f} s, stock {stock_s:.1f} s, limit {limit_s:.1f} s", flush=True)
    return rows


def whole_jobs(model_dir: str, tasks_dir: Path, datasets: list[str], batch_size: int, threads: int) -> dict:
    """Wall seconds of the lm-eval CLI and of our evaluate_tasks on all datasets, each in a fresh process."""
    with tempfile.TemporaryDirectory() as scratch:
        include = Path(scratch)
        for dataset in datasets:  # the CLI resolves data files against its cwd: give it absolute ones
            config = load_task_config(tasks_dir / dataset, f"prunescope_{dataset}")
            (include / f"{dataset}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        env_threads = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": scratch}
        cli = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
               f"pretrained={model_dir},dtype=float32", "--tasks", ",".join(f"prunescope_{d}" for d in datasets),
               "--include_path", str(include), "--device", "cpu", "--batch_size", str(batch_size),
               "--seed", str(SEED)]
        ours = [sys.executable, __file__, "--job", "--model-dir", model_dir, "--tasks-dir", str(tasks_dir),
                "--batch-size", str(batch_size), "--threads", str(threads), *datasets]
        seconds = {}
        for label, command in (("cli", cli), ("ours", ours)):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env_threads, timeout=3600)
            seconds[label] = time.perf_counter() - start
    return seconds


def job(model_dir: str, tasks_dir: Path, datasets: list[str], batch_size: int) -> None:
    """What one evaluate rule does (model load, then every dataset in one lm-eval run), minus writing results."""
    model, tokenizer = load_model(model_dir, "float32", torch.device("cpu"))
    evaluate_tasks(model, tokenizer, {f"prunescope_{d}": tasks_dir / d for d in datasets}, batch_size, 0, "cpu")


def write_reports(rows: list[dict], jobs: dict, out_dir: Path, header: list[str]) -> None:
    total = {key: sum(row[key] for row in rows) for key in ("examples", "seconds_stock", "seconds_ours",
                                                            "seconds_limit", "tokens_stock", "tokens_needed")}
    lines = [*header, "",
             "| dataset | examples | requests | contexts | tokens stock / needed | ex/s stock | ex/s ours "
             "| ours vs stock | share of forward limit | same scores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['examples']} | {row['requests']} | {row['contexts']} "
                     f"| {row['tokens_stock']:,} / {row['tokens_needed']:,} | {row['examples_per_s_stock']:.1f} "
                     f"| {row['examples_per_s_ours']:.1f} | {row['speedup_vs_stock']:.2f}x "
                     f"| {row['share_of_limit']:.2f} | {'yes' if row['same_scores'] else 'NO'} |")
    lines.append(f"| all | {total['examples']} | | | {total['tokens_stock']:,} / {total['tokens_needed']:,} "
                 f"| {total['examples'] / total['seconds_stock']:.1f} "
                 f"| {total['examples'] / total['seconds_ours']:.1f} "
                 f"| {total['seconds_stock'] / total['seconds_ours']:.2f}x "
                 f"| {total['seconds_limit'] / total['seconds_ours']:.2f} | |")
    if jobs:
        lines += ["", f"Whole job in a fresh process (imports, model load, all {len(rows)} datasets): plain `lm_eval "
                  f"run` CLI {jobs['cli']:.1f} s, ours {jobs['ours']:.1f} s: {jobs['cli'] / jobs['ours']:.2f}x."]
    if rows[0]["peak_gpu_memory_bytes"] != "":
        peak = max(row["peak_gpu_memory_bytes"] for row in rows)
        lines += ["", f"Peak GPU memory of our scorer: {peak / 2**30:.2f} GiB."]
    write_outputs(out_dir, "evaluate", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a prepared safetensors model folder (float32)")
    source.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS), help="random weights of these shapes "
                        "(fp16 on a GPU), with --tokenizer-dir's tokenizer; no CLI comparison")
    parser.add_argument("--tokenizer-dir", default="data/models/smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks-dir", type=Path, default=Path("results/tasks"), help="build_task's folders")
    parser.add_argument("datasets", nargs="*", help="default: every task folder under --tasks-dir")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets = args.datasets or sorted(path.name for path in args.tasks_dir.iterdir() if path.is_dir())
    if args.job:
        return job(args.model_dir, args.tasks_dir, datasets, args.batch_size)
    device = torch.device(args.device)
    if args.model_dir:
        model, tokenizer = load_model(args.model_dir, "float32", device)
        label = f"{Path(args.model_dir).name} (float32)"
    else:
        tokenizer = load_model(args.tokenizer_dir, "float32", torch.device("cpu"))[1]
        model = random_model(args.random_config, None, device, vocab_size=len(tokenizer)).to(device)
        label = f"random {args.random_config} ({next(model.parameters()).dtype})"
    rows = per_dataset(model, tokenizer, args.tasks_dir, datasets, args.batch_size, device, label)
    jobs = whole_jobs(args.model_dir, args.tasks_dir, datasets, args.batch_size, args.threads) \
        if args.model_dir and device.type == "cpu" else {}
    write_reports(rows, jobs, args.out, [
        "# Evaluation speed: our scorer vs stock lm-eval vs the forward-pass limit",
        "",
        f"{label} on {rows[0]['device']}; batch size {args.batch_size}; zero-shot multiple "
        "choice on the workflow's task folders. Stock = lm-eval's HFLM on the same config (what its CLI runs); "
        "limit = a bare batched decoder forward over each distinct context followed by its continuations "
        "(minus their last token); "
        "share of limit = limit seconds / our seconds. Tokens stock = what stock lm-eval encodes.",
    ])


if __name__ == "__main__":
    main()
