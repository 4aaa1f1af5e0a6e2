"""Bytes per pruned variant against an fp16 checkpoint of its base model.

A variant is stored as an artifact over the base model (bit-packed keep-masks, plus kept values for methods that
update weights, and a manifest), never as a second checkpoint. For every artifact folder under --pruned-dir this
writes its bytes by file and their ratio to the base model's parameters at 2 bytes each (aim: <= 1/16 for
mask-only methods). Writes <out>/storage.csv and <out>/storage.md.

  python bench/storage.py --pruned-dir results/pruned --models-dir data/models
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402

from prunescope.pruning.artifact import MANIFEST, MASKS, WEIGHTS, read_manifest

COLUMNS = ["variant", "method", "structure", "sparsity", "masks_bytes", "weights_bytes", "manifest_bytes",
           "total_bytes", "fp16_checkpoint_bytes", "ratio_to_fp16"]


def parameter_count(model_dir: Path) -> int:
    """Parameters in a model folder's safetensors files, read from their headers (no tensor is loaded)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def artifact_bytes(folder: Path) -> dict[str, int]:
    sizes = {key: (folder / name).stat().st_size if (folder / name).exists() else 0
             for key, name in (("masks_bytes", MASKS), ("weights_bytes", WEIGHTS), ("manifest_bytes", MANIFEST))}
    return {**sizes, "total_bytes": sum(sizes.values())}


def storage_rows(pruned_dir: Path, models_dir: Path) -> list[dict]:
    rows = []
    for manifest_path in sorted(pruned_dir.glob(f"*/**/{MANIFEST}")):
        folder = manifest_path.parent
        manifest = read_manifest(folder)  # checked against its own checksum, as every reader of it does
        model = folder.relative_to(pruned_dir).parts[0]
        fp16 = 2 * parameter_count(models_dir / model)
        sizes = artifact_bytes(folder)
        rows.append({"variant": str(folder.relative_to(pruned_dir)), "method": manifest["method"],
                     "structure": manifest["structure"], "sparsity": manifest["sparsity"], **sizes,
                     "fp16_checkpoint_bytes": fp16, "ratio_to_fp16": round(sizes["total_bytes"] / fp16, 5)})
    return rows


def write_reports(rows: list[dict], out_dir: Path) -> None:
    lines = ["# Storage per pruned variant vs an fp16 checkpoint", "",
             "Artifact = bit-packed keep-masks (+ kept values for weight-updating methods) + manifest, applied to the "
             "base model at load; fp16 checkpoint = every parameter of the base model at 2 bytes.", "",
             "| variant | masks MiB | weights MiB | manifest KiB | total MiB | fp16 checkpoint MiB | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['masks_bytes'] / 2**20:.2f} | {row['weights_bytes'] / 2**20:.2f} "
                     f"| {row['manifest_bytes'] / 2**10:.1f} | {row['total_bytes'] / 2**20:.2f} "
                     f"| {row['fp16_checkpoint_bytes'] / 2**20:.1f} | 1/{1 / row['ratio_to_fp16']:.1f} |")
    write_outputs(out_dir, "storage", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruned-dir", type=Path, default=Path("results/pruned"))
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    rows = storage_rows(args.pruned_dir, args.models_dir)
    if not rows:
        raise SystemExit(f"no pruning artifact under {args.pruned_dir}: run `make run` (or snakemake prune_all) first")
    write_reports(rows, args.out)


if __name__ == "__main__":
    main()
