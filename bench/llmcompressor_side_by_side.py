"""prunescope beside llm-compressor, the industry peer for one-shot Wanda and SparseGPT, on the same model and the
same calibration tensor: wall time and peak memory of each pruning (each in a fresh process, same threads),
perplexity of each pruned model on the held-out windows, and how much of the two masks agree.

llm-compressor pins another transformers, so it runs from its own venv (`make bench-llmcompressor` creates
.venv-llmcompressor) through bench/llmcompressor_peer.py; ours runs here through this script's --ours mode.
Writes <out>/llmcompressor.csv and .md.

  python bench/llmcompressor_side_by_side.py --model-dir data/models/smollm2-135m \
      --calibration data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors \
      --windows data/perplexity/smollm2-135m/gensim_wiki_heldout.safetensors \
      --peer-python .venv-llmcompressor/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402
from peak_memory import peak_rss_bytes  # noqa: E402

from prunescope.calibration.sample import load_calibration  # noqa: E402
from prunescope.evaluation.perplexity import perplexity  # noqa: E402
from prunescope.models.prepare import load_model  # noqa: E402
from prunescope.pruning import PruneOptions, prune_model  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = {"wanda": {"per_row_alpha": False}, "sparsegpt": {"percdamp": 0.01, "blocksize": 128}}  # params.yaml's
COLUMNS = ["method", "implementation", "seconds", "peak_rss_bytes", "perplexity", "dense_perplexity",
           "mask_agreement", "sparsity", "speedup", "versions"]


def prune_ours(model_dir: Path, calibration: Path, method: str, out: Path, sparsity: float, threads: int,
               batch_size: int) -> dict:
    """Our driver on the CPU in fp32, as the peer runs; the pruned decoder Linears saved as the peer saves them."""
    torch.set_num_threads(threads)
    model, _ = load_model(model_dir, "float32", torch.device("cpu"))
    ids = load_calibration(calibration)
    start = time.perf_counter()
    prune_model(model, "llama", PruneOptions(method, sparsity, method_options=METHODS[method], batch_size=batch_size),
                ids, torch.device("cpu"))
    seconds = time.perf_counter() - start
    weights = {f"{name}.weight": module.weight.detach().contiguous() for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name}
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, out / "weights.safetensors")
    return {"seconds": seconds, "peak_rss_bytes": peak_rss_bytes(), "layers": len(weights),
            "versions": {"prunescope": "this checkout", "torch": torch.__version__}}


def run_json(command: list[str]) -> dict:
    """The last line of a fresh process's stdout, as JSON (its progress goes to stderr)."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace, runs: dict[tuple[str, str], dict], folders: dict[tuple[str, str], Path]) -> list:
    """Perplexity of every pruned model and the agreement of the two masks per method."""
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model_dir, "float32", torch.device("cpu"))
    dense_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    windows = load_calibration(args.windows, "perplexity_windows")
    dense = perplexity(model, windows, args.ppl_batch_size)["perplexity"]
    rows = []
    for method in args.methods:
        weights = {impl: load_file(folders[method, impl] / "weights.safetensors") for impl in ("prunescope", "peer")}
        kept = {impl: {name: value != 0 for name, value in weights[impl].items()} for impl in weights}
        agree = sum(int((kept["prunescope"][name] == kept["peer"][name]).sum()) for name in kept["prunescope"])
        total = sum(mask.numel() for mask in kept["prunescope"].values())
        for impl in ("prunescope", "peer"):
            model.load_state_dict(dense_state)
            model.load_state_dict(weights[impl], strict=False)
            run = runs[method, impl]
            rows.append({
                "method": method, "implementation": "llm-compressor" if impl == "peer" else impl,
                "seconds": round(run["seconds"], 2), "peak_rss_bytes": run["peak_rss_bytes"],
                "perplexity": round(perplexity(model, windows, args.ppl_batch_size)["perplexity"], 3),
                "dense_perplexity": round(dense, 3), "mask_agreement": round(agree / total, 4),
                "sparsity": round(1 - sum(int(mask.sum()) for mask in kept[impl].values()) / total, 4),
                "speedup": round(runs[method, "peer"]["seconds"] / run["seconds"], 2),
                "versions": json.dumps(run["versions"], sort_keys=True)})
    return rows


def report(rows: list[dict], args: argparse.Namespace) -> list[str]:
    ids = load_file(args.calibration)["input_ids"]
    lines = [f"# prunescope beside llm-compressor: {args.model_dir.name}, fp32 on the CPU, {args.threads} threads, "
             f"sparsity {args.sparsity} unstructured, the same {ids.shape[0]} x {ids.shape[1]} calibration tensor", "",
             "Each pruning in a fresh process; speedup = llm-compressor's seconds / this row's. Mask agreement: the "
             "share of decoder-Linear entries that both keep or both prune. Perplexity on the held-out windows.", "",
             "| method | implementation | seconds | speedup | peak RSS GiB | perplexity (dense) | mask agreement |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['implementation']} | {row['seconds']} | {row['speedup']} | "
                     f"{row['peak_rss_bytes'] / 2**30:.2f} | {row['perplexity']} ({row['dense_perplexity']}) | "
                     f"{row['mask_agreement']} |")
    versions = {json.loads(row["versions"]).get("llmcompressor") for row in rows} - {None}
    lines += ["", f"llm-compressor {', '.join(sorted(versions))} from its own venv."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--windows", type=Path, required=True, help="perplexity windows (perplexity_windows rule)")
    parser.add_argument("--peer-python", type=Path, required=True, help="python of llm-compressor's own venv")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="our calibration batch (params.yaml's)")
    parser.add_argument("--ppl-batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--ours", nargs=2, metavar=("METHOD", "OUT"), help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args(argv)
    if args.ours:
        print(json.dumps(prune_ours(args.model_dir, args.calibration, args.ours[0], Path(args.ours[1]),
                                    args.sparsity, args.threads, args.batch_size)), flush=True)
        return
    if not args.peer_python.exists():
        sys.exit(f"{args.peer_python} does not exist: `make bench-llmcompressor` creates llm-compressor's venv")
    runs, folders = {}, {}
    with tempfile.TemporaryDirectory(prefix="prunescope-llmc-") as scratch:
        for method in args.methods:
            for impl in ("prunescope", "peer"):
                folders[method, impl] = Path(scratch) / f"{method}-{impl}"
                common = [str(args.model_dir), str(args.calibration)]
                command = ([str(args.peer_python), str(HERE / "llmcompressor_peer.py"), *common, method,
                            str(folders[method, impl])] if impl == "peer" else
                           [sys.executable, __file__, "--model-dir", *common[:1], "--calibration", common[1],
                            "--windows", str(args.windows), "--peer-python", str(args.peer_python), "--ours", method,
                            str(folders[method, impl])])
                command += ["--sparsity", str(args.sparsity), "--threads", str(args.threads)]
                runs[method, impl] = run_json(command)
                print(f"{method} {impl}: {runs[method, impl]['seconds']:.1f} s", flush=True)
        rows = compare(args, runs, folders)
    write_outputs(args.out, "llmcompressor", COLUMNS, rows, report(rows, args))
    print("\n".join(report(rows, args)))


if __name__ == "__main__":
    main()
