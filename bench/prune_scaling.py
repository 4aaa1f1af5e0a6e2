"""How pruning time grows with calibration size (n x seqlen) and with model width, as fitted power-law exponents.

Random-init 2-block LLaMA configs (intermediate = 8/3 x hidden, heads of 64), pruned at 0.5 unstructured by every
method (magnitude data-free, so only its width is varied); each point is the fastest of --repeats runs (the
machines are noisy; the minimum is the least disturbed). The exponent is the least-squares slope of log(seconds)
on log(size) over all points, and over the last doubling alone: work per weight grows as width^2 (SparseGPT's
Hessian inverse as width^3) and block forwards as the calibration tokens, while fixed per-call costs flatten
the slope at small sizes. Writes <out>/prune_scaling.csv and <out>/prune_scaling.md.

  python bench/prune_scaling.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402
from prune import METHODS, device_name  # noqa: E402

from prunescope.pruning import METHODS as REGISTRY  # noqa: E402
from prunescope.pruning import PruneOptions, prune_model  # noqa: E402

COLUMNS = ["method", "device", "axis", "hidden_size", "nsamples", "seqlen", "size", "seconds"]
WIDTHS = (128, 256, 512, 1024)
CALIBRATIONS = ((8, 128), (16, 128), (32, 128), (32, 256), (64, 256))
BASE_WIDTH, BASE_CALIBRATION = 256, (16, 128)


def random_llama(hidden_size: int) -> torch.nn.Module:
    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=hidden_size * 8 // 3, num_hidden_layers=2,
                         num_attention_heads=hidden_size // 64, num_key_value_heads=hidden_size // 64,
                         vocab_size=512, max_position_embeddings=1024)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def fastest(method: str, hidden_size: int, nsamples: int, seqlen: int, repeats: int, device: torch.device) -> float:
    model = random_llama(hidden_size)
    calibration = (torch.randint(0, 512, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
                   if REGISTRY[method].CALIBRATED else None)
    times = []
    for _ in range(repeats):
        state = {name: value.clone() for name, value in model.state_dict().items()}
        start = time.perf_counter()
        prune_model(model, "llama", PruneOptions(method, 0.5, batch_size=8), calibration, device)
        times.append(time.perf_counter() - start)
        model.load_state_dict(state)
    return min(times)


def exponent(sizes: list[float], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def measure(repeats: int, device: torch.device) -> list[dict]:
    rows = []
    name = device_name(device)
    for method in METHODS:
        for hidden in WIDTHS:
            nsamples, seqlen = BASE_CALIBRATION
            rows.append({"method": method, "device": name, "axis": "width", "hidden_size": hidden,
                         "nsamples": nsamples, "seqlen": seqlen, "size": hidden,
                         "seconds": round(fastest(method, hidden, nsamples, seqlen, repeats, device), 4)})
        for nsamples, seqlen in CALIBRATIONS if REGISTRY[method].CALIBRATED else ():
            rows.append({"method": method, "device": name, "axis": "calibration", "hidden_size": BASE_WIDTH,
                         "nsamples": nsamples, "seqlen": seqlen, "size": nsamples * seqlen,
                         "seconds": round(fastest(method, BASE_WIDTH, nsamples, seqlen, repeats, device), 4)})
        print(f"{method}: done", flush=True)
    return rows


def write_reports(rows: list[dict], out_dir: Path, repeats: int) -> None:
    lines = ["# Pruning time vs calibration size and model width", "",
             f"Random 2-block LLaMA on {rows[0]['device']}, 0.5 unstructured, fastest of {repeats} runs. Width: hidden "
             f"{', '.join(map(str, WIDTHS))} at calibration {BASE_CALIBRATION[0]} x {BASE_CALIBRATION[1]}; "
             f"calibration: {', '.join(f'{n} x {s}' for n, s in CALIBRATIONS)} at hidden {BASE_WIDTH}. "
             "Exponent = slope of log(seconds) on log(hidden) or log(n x seqlen).", "",
             "| method | exponent, width (last doubling) | exponent, calibration tokens (last doubling) "
             f"| seconds at hidden {WIDTHS[-1]} | seconds at {CALIBRATIONS[-1][0]} x {CALIBRATIONS[-1][1]} |",
             "|---|---:|---:|---:|---:|"]
    for method in METHODS:
        cells = []
        for axis in ("width", "calibration"):
            points = [row for row in rows if row["method"] == method and row["axis"] == axis]
            sizes, seconds = [p["size"] for p in points], [p["seconds"] for p in points]
            cells.append((f"{exponent(sizes, seconds):.2f} ({exponent(sizes[-2:], seconds[-2:]):.2f})",
                          f"{seconds[-1]:.3f}") if points else ("-- (data-free)", "--"))
        lines.append(f"| {method} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")
    write_outputs(out_dir, "prune_scaling", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    write_reports(measure(args.repeats, torch.device(args.device)), args.out, args.repeats)


if __name__ == "__main__":
    main()
