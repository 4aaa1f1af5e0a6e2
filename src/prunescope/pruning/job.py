"""One pruning job as the workflow runs it (rules prune and prune_guided): the checkpoint streamed block by block,
the pattern key read, the artifact and the run's measurements written. NSA-guided pruning differs only in the
neurons it exempts, which its own script works out and passes in."""

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from prunescope.calibration.sample import load_calibration
from prunescope.config import OWL, parse_pattern_key
from prunescope.models.streamed import CheckpointBlocks
from prunescope.pruning.artifact import save_artifact, write_measurements
from prunescope.pruning.driver import METHODS, prune_model
from prunescope.pruning.owl import OwlOptions


def prune_variant(model_dir: str, model_spec: Mapping[str, Any], variant: Mapping[str, str],
                  calibration_path: str | None, method_options: Mapping[str, Any], owl_options: Mapping[str, float],
                  batch_size: int, device: torch.device, scratch_parent: str | None, artifact: str | os.PathLike,
                  measurements: str | os.PathLike, protected: Mapping[int, Sequence[int]] | None = None,
                  protected_category: str | None = None) -> None:
    """Prune the variant named by `variant` (model, method, pattern, calib: the rule's wildcards); `protected`
    ({block: MLP neurons}) exempts NSA-matched neurons and is recorded in the manifest with its category."""
    structure, sparsity = parse_pattern_key(variant["pattern"])
    owl = OwlOptions(owl_options["m"], owl_options["lambda"]) if structure == OWL else None  # OWL's block sparsities
    structure = "unstructured" if owl else structure
    calibration = load_calibration(calibration_path) if calibration_path else None
    method = variant["method"]
    with tempfile.TemporaryDirectory(dir=scratch_parent) as scratch:  # SparseGPT's pruned blocks
        # host memory: the embeddings and one block at a time, read from the checkpoint (models/streamed.py)
        checkpoint = CheckpointBlocks(model_dir, model_spec["dtype"], model_spec["family"], scratch)
        keep_pruned = METHODS[method].UPDATES_WEIGHTS
        result = prune_model(checkpoint.model, model_spec["family"], method, sparsity, structure, calibration,
                             batch_size, device, method_options, protected_neurons=protected,
                             residence=lambda index, block, on: checkpoint.resident(index, block, on, keep_pruned),
                             owl=owl)
        manifest = {"model": variant["model"], "method": method, "pattern": variant["pattern"],
                    "structure": structure, "sparsity": sparsity, "calibration": variant["calib"],
                    "method_options": dict(method_options)}
        if protected is not None:
            manifest["protected"] = {"category": protected_category,
                                     "neurons": {str(k): v for k, v in protected.items()}}
        save_artifact(result, checkpoint.pruned_weight, artifact, manifest)
    write_measurements(result, measurements)
