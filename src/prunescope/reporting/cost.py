"""The prune_cost table: per pruning run, wall time, peak memory, achieved sparsity and the reconstruction
error ||WX - W'X|| / ||WX|| averaged per layer type (q_proj, ..., down_proj)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from prunescope.io import read_result
from prunescope.pruning.artifact import read_manifest

KEYS = ["model", "method", "pattern", "sparsity", "calibration"]


def prune_cost_table(artifact_dirs: Iterable[str], measurement_paths: Iterable[str]) -> pd.DataFrame:
    """One row per artifact folder (its manifest.json) and its run's measurements file, in the same order; error
    columns are named error_<layer type>."""
    rows = []
    for folder, measurements in zip(artifact_dirs, measurement_paths, strict=True):
        manifest, run = read_manifest(folder), read_result(measurements, "prune")
        layers = pd.DataFrame(manifest["layers"])
        layers["type"] = layers["name"].str.rsplit(".", n=1).str[-1]
        errors = layers.groupby("type", sort=True)["reconstruction_error"].mean()
        rows.append({**{key: manifest[key] for key in KEYS}, "seconds": round(run["seconds"], 1),
                     "peak_memory_gb": round(run["peak_memory_bytes"] / 2**30, 3),
                     "achieved_sparsity": manifest["achieved_sparsity"],
                     **{f"error_{kind}": value for kind, value in errors.items()}})
    return pd.DataFrame(rows).sort_values(KEYS, kind="stable").reset_index(drop=True)
