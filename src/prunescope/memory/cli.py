"""The prunescope-plan command: every (model, stage) prediction of a grid, as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from prunescope.memory import __doc__ as PLAN_DOC
from prunescope.memory.shapes import model_shape, run_shape
from prunescope.memory.stages import Prediction, predict
from prunescope.memory.terms import GIB

GPU_SIZES_GB = (24, 40, 80)


def plan(params: dict, grid: str | None = None, methods: list[str] | None = None, device: str = "cuda",
         models: list[str] | None = None, eval_context: int = 2048) -> list[Prediction]:
    """Every (model, stage) prediction of a grid: prune per method, then evaluate (after the heaviest apply)."""
    chosen = params["grids"][grid or params["grid"]]
    run = run_shape(params, grid, device, eval_context)
    predictions = []
    for name in models or chosen["models"]:
        spec = params.get("models", {}).get(name, {})
        model = model_shape(name, spec.get("dtype"))
        for method in methods or chosen["methods"]:
            predictions.append(predict(model, "prune", run, method))
        predictions.append(predict(model, "evaluate", run, "sparsegpt" if "sparsegpt" in (
            methods or chosen["methods"]) else (methods or chosen["methods"])[0]))
    return predictions


def format_table(predictions: list[Prediction], breakdown: bool = False) -> str:
    """A plain-text table: model, stage, peak GPU and host GiB, fits on 24/40/80 GB; optionally each phase's terms."""
    header = f"{'model':<16} {'stage':<22} {'GPU GiB':>8} {'host GiB':>9}  " + "  ".join(
        f"{size}GB" for size in GPU_SIZES_GB)
    lines = [header, "-" * len(header)]
    for prediction in predictions:
        fits = "  ".join(f"{'yes' if prediction.fits(size) else 'no':>4}" for size in GPU_SIZES_GB)
        lines.append(f"{prediction.model:<16} {prediction.stage:<22} {prediction.gpu_bytes / GIB:>8.2f} "
                     f"{prediction.host_bytes / GIB:>9.2f}  {fits}")
        if breakdown:
            for phase in prediction.phases:
                terms = [f"device {name} {size / GIB:.3f}" for name, size in phase.device.items()]
                terms += [f"host {name} {size / GIB:.3f}" for name, size in phase.host.items()]
                lines.append(f"    {phase.name}: " + "; ".join(terms))
    return "\n".join(lines)


def format_markdown(predictions: list[Prediction]) -> str:
    """One markdown row per model: each stage's peak GPU / host GiB side by side (docs/scaling.md's table)."""
    stages = list(dict.fromkeys(prediction.stage for prediction in predictions))
    rows: dict[str, dict[str, Prediction]] = {}
    for prediction in predictions:
        rows.setdefault(prediction.model, {})[prediction.stage] = prediction
    lines = ["| model | " + " | ".join(f"{stage}: GPU / host GiB" for stage in stages) + " |",
             "|---|" + "---:|" * len(stages)]
    for model, by_stage in rows.items():
        cells = [f"{by_stage[stage].gpu_bytes / GIB:.1f} / {by_stage[stage].host_bytes / GIB:.1f}"
                 if stage in by_stage else "--" for stage in stages]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=PLAN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--grid", help="a grid of params.yaml (default: its `grid`); `paper` for the paper's")
    parser.add_argument("--methods", nargs="+", help="default: the grid's")
    parser.add_argument("--model", nargs="+", dest="models", help="params.yaml names, configs.yaml names or folders")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--eval-context", type=int, default=2048, help="tokens of the widest evaluation row")
    parser.add_argument("--breakdown", action="store_true", help="print every phase's terms")
    parser.add_argument("--markdown", action="store_true", help="a markdown table, one row per model")
    args = parser.parse_args(argv)
    params = yaml.safe_load(args.params.read_text())
    predictions = plan(params, args.grid, args.methods, args.device, args.models, args.eval_context)
    run = run_shape(params, args.grid, args.device, args.eval_context)
    print(f"calibration {run.nsamples} x {run.seqlen} (batch {run.calibration_batch_size}), evaluation batch "
          f"{run.eval_batch_size} x {run.eval_context} tokens, device {run.device}, offload "
          f"{'off' if run.offload_gpu_gib is None else f'{run.offload_gpu_gib} GiB on the GPU'}")
    print(format_markdown(predictions) if args.markdown else format_table(predictions, args.breakdown))
